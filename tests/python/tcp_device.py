"""A device on MQTT over TLS (IoT Hub's 8883) as the TCP suites open it: paho-mqtt 1.6 (as the
Azure SDK ships it) with IoT Hub's user name and a SAS password, on the port in
TWINHUB_MQTT_PORT, trusting TWINHUB_CA; and the registry calls that make its device.
"""

import os
import queue
import time

import paho.mqtt.client as mqtt
from azure.iot.hub import IoTHubRegistryManager

import sas

OWNER = os.environ["TWINHUB_CONNECTION_STRING"]
CA = os.environ["TWINHUB_CA"]
PORT = int(os.environ["TWINHUB_MQTT_PORT"])
# The host the devices name (in their token and user name): the hub's, as in the connection string.
HUB = dict(p.split("=", 1) for p in OWNER.split(";"))["HostName"]


def registry():
    return IoTHubRegistryManager.from_connection_string(OWNER)


def new_device(device_id):
    r = registry()
    r.create_device_with_sas(device_id, None, None, "enabled")
    return r.get_device(device_id).authentication.symmetric_key.primary_key


def device_token(device_id, key, ttl=600):
    return sas.sign(f"{HUB}/devices/{device_id}", key, ttl)


class Device:
    """A paho client on 8883 with IoT Hub's user name and SAS password."""

    def __init__(self, device_id, key, ttl=600, keepalive=30):
        self.inbox = queue.Queue()
        self.connack = queue.Queue()
        self.disconnects = queue.Queue()
        c = mqtt.Client(client_id=device_id, protocol=mqtt.MQTTv311)
        c.tls_set(ca_certs=CA)
        c.username_pw_set(f"{HUB}/{device_id}/?api-version=2021-04-12", device_token(device_id, key, ttl))
        c.on_message = lambda _c, _u, m: self.inbox.put((m.topic, m.payload))
        c.on_connect = lambda _c, _u, _f, rc: self.connack.put(rc)
        c.on_disconnect = lambda _c, _u, rc: self.disconnects.put(rc)
        c.reconnect_delay_set(60, 60)
        self.client = c
        c.connect("127.0.0.1", PORT, keepalive=keepalive)
        c.loop_start()
        assert self.connack.get(timeout=15) == 0

    def subscribe(self, *topics):
        for t in topics:
            self.client.subscribe(t, qos=1)
        time.sleep(0.5)

    def expect(self, prefix, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                topic, payload = self.inbox.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if topic.startswith(prefix):
                return topic, payload
        raise AssertionError(f"nothing on {prefix}")

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()

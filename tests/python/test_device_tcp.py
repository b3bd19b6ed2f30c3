"""MQTT over TLS (IoT Hub's port 8883) with plain clients: paho-mqtt 1.6 (as the Azure SDK ships
it) for the features, raw sockets for the bad input.

Run by tests/tests/device_tcp.rs, which starts the hub under workerd over https on a free port
with MQTT over TLS on another (TWINHUB_MQTT_PORT) and MQTT_CONNECT_TIMEOUT_MS=1500, and passes
TWINHUB_CONNECTION_STRING (owner policy, HostName=127.0.0.1:{https port}) and TWINHUB_CA.
"""

import json
import socket
import ssl
import struct
import threading
import time
import urllib.request

from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

import sas
from waiting import eventually

from tcp_device import CA, HUB, OWNER, PORT, Device, device_token, new_device, registry  # noqa: F401


def send_c2d(device_id, text):
    request = urllib.request.Request(
        f"https://{HUB}/api/devices/{device_id}/messages",
        data=json.dumps({"payload": text}).encode(),
        method="POST",
        headers={"Authorization": sas.owner_token(OWNER), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=CA)) as response:
        assert response.status == 202


def test_everything_a_websocket_device_gets():
    device_id = "tcp-features"
    key = new_device(device_id)
    r = registry()
    d = Device(device_id, key)
    try:
        d.subscribe(
            "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/methods/POST/#",
            f"devices/{device_id}/messages/devicebound/#",
        )
        # Twin GET and a reported patch.
        d.client.publish("$iothub/twin/GET/?$rid=1", b"", qos=1)
        topic, body = d.expect("$iothub/twin/res/")
        assert topic == "$iothub/twin/res/200/?$rid=1", topic
        assert json.loads(body)["desired"]["$version"] == 1
        d.client.publish("$iothub/twin/PATCH/properties/reported/?$rid=2", json.dumps({"temp": 21}), qos=1)
        topic, _ = d.expect("$iothub/twin/res/")
        assert topic.startswith("$iothub/twin/res/204/?$rid=2&$version="), topic
        assert r.get_twin(device_id).properties.reported["temp"] == 21
        # A desired patch, pushed as it happens.
        r.update_twin(device_id, Twin(properties=TwinProperties(desired={"fan": "on"})), "*")
        topic, body = d.expect("$iothub/twin/PATCH/properties/desired/")
        assert json.loads(body)["fan"] == "on"
        # Telemetry, stored.
        info = d.client.publish(f"devices/{device_id}/messages/events/kind=t", json.dumps({"t": 1}), qos=1)
        info.wait_for_publish(10)
        # A direct method, answered over 8883.
        result = {}
        call = threading.Thread(
            target=lambda: result.setdefault(
                "r", r.invoke_device_method(device_id, CloudToDeviceMethod(method_name="ping", payload={"n": 1}))
            )
        )
        call.start()
        topic, body = d.expect("$iothub/methods/POST/ping/")
        rid = topic.split("$rid=")[1]
        d.client.publish(f"$iothub/methods/res/200/?$rid={rid}", json.dumps({"pong": json.loads(body)["n"]}), qos=1)
        call.join(15)
        assert result["r"].status == 200 and result["r"].payload == {"pong": 1}
        # Cloud-to-device, through twinhub's REST send (the service SDK's send is AMQP).
        send_c2d(device_id, "hello tcp")
        topic, body = d.expect(f"devices/{device_id}/messages/devicebound/")
        assert body == b"hello tcp"
        assert r.get_twin(device_id).connection_state == "Connected"
    finally:
        d.close()


def test_keep_alive_and_token_expiry():
    device_id = "tcp-expiry"
    key = new_device(device_id)
    # Keep-alive 1 s: paho's PINGREQs hold the session well past 1.5 x keep-alive.
    alive = Device(device_id, key, keepalive=1)
    try:
        time.sleep(4)
        assert alive.disconnects.empty(), "a pinging session was dropped"
    finally:
        alive.close()
    # A token that expires in 3 s: the session ends when it does.
    short = Device(device_id, key, ttl=3)
    try:
        short.disconnects.get(timeout=20)
    finally:
        short.close()


def test_disable_drops_the_session():
    device_id = "tcp-disable"
    key = new_device(device_id)
    d = Device(device_id, key)
    try:
        r = registry()
        device = r.get_device(device_id)
        r.update_device_with_sas(device_id, device.etag, key, device.authentication.symmetric_key.secondary_key, "disabled")
        d.disconnects.get(timeout=15)
    finally:
        d.close()


# ---------------------------------------------------------------------------------------------
# Bad input: each connection closes, its neighbour keeps being served, nothing changes.


def remaining_length(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def connect_packet(device_id, key):
    payload = mqtt_string(device_id) + mqtt_string(f"{HUB}/{device_id}/?api-version=2021-04-12")
    payload += mqtt_string(device_token(device_id, key))
    variable = mqtt_string("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 30)
    body = variable + payload
    return bytes([0x10]) + remaining_length(len(body)) + body


def tls_socket():
    context = ssl.create_default_context(cafile=CA)
    raw = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def closed_within(sock, seconds):
    """True when the hub closes `sock` within `seconds` (whatever it sent first)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except (ConnectionError, ssl.SSLError, OSError) as e:
        return not isinstance(e, socket.timeout)
    return False


def test_bad_input_closes_only_that_connection():
    neighbour_id, victim_id = "tcp-neighbour", "tcp-victim"
    neighbour_key, victim_key = new_device(neighbour_id), new_device(victim_id)
    r = registry()
    before = r.get_twin(victim_id)
    neighbour = Device(neighbour_id, neighbour_key)
    neighbour.subscribe("$iothub/twin/res/#")
    rid = [0]

    def neighbour_is_served():
        rid[0] += 1
        neighbour.client.publish(f"$iothub/twin/GET/?$rid={rid[0]}", b"", qos=1)
        topic, _ = neighbour.expect("$iothub/twin/res/")
        return topic.startswith("$iothub/twin/res/200/")

    try:
        # Plain TCP, no TLS: a CONNECT in the clear is not MQTT to a TLS port.
        plain = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        plain.sendall(connect_packet(victim_id, victim_key))
        assert closed_within(plain, 10), "plain TCP was not closed"
        assert neighbour_is_served()

        # TLS, then garbage instead of CONNECT.
        s = tls_socket()
        s.sendall(b"\xff" * 64)
        assert closed_within(s, 10), "garbage was not answered with a close"
        assert neighbour_is_served()

        # TLS with no CONNECT at all: closed after the connect timeout (1.5 s here).
        s = tls_socket()
        assert closed_within(s, 10), "a silent connection was kept"

        # A packet over the size limit (a PUBLISH that claims 300,000 bytes).
        s = tls_socket()
        s.sendall(connect_packet(victim_id, victim_key))
        assert s.recv(4)[:1] == b"\x20", "no CONNACK"
        topic = mqtt_string(f"devices/{victim_id}/messages/events/")
        s.sendall(bytes([0x30]) + remaining_length(300_000) + topic + b"x" * 1000)
        assert closed_within(s, 10), "an oversize packet was not refused"
        assert neighbour_is_served()

        # A foreign topic: another device's events.
        s = tls_socket()
        s.sendall(connect_packet(victim_id, victim_key))
        assert s.recv(4)[:1] == b"\x20", "no CONNACK"
        topic = mqtt_string(f"devices/{neighbour_id}/messages/events/")
        body = topic + b"{}"
        s.sendall(bytes([0x30]) + remaining_length(len(body)) + body)
        assert closed_within(s, 10), "a foreign topic was not refused"

        # A flood of half-open TLS connections: all closed by the connect timeout, and the
        # neighbour served throughout.
        flood = [tls_socket() for _ in range(100)]
        assert neighbour_is_served()
        assert all(closed_within(f, 10) for f in flood)
        assert neighbour_is_served()
        assert neighbour.disconnects.empty(), "the neighbour was dropped"

        after = r.get_twin(victim_id)
        assert after.properties.reported == before.properties.reported
        assert after.version == before.version
    finally:
        neighbour.close()

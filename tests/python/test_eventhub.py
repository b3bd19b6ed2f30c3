"""The Event Hub-compatible endpoint with the real azure-eventhub 5.15 consumer (its own
pure-Python AMQP stack), unmodified, on its Event Hubs emulator connection string
(`UseDevelopmentEmulator=true`: plain AMQP to the endpoint's host and port): the article
device's telemetry arrives with its `alert` property and IoT Hub's annotations, the
`$management` queries the consumer makes at start are answered, a consumer can start from an
offset, a sequence number or the end, and a wrong key is refused.

Run by tests/tests/eventhub.rs with TWINHUB_EVENTHUB_CONNECTION_STRING beside the usual
TWINHUB_CONNECTION_STRING, TWINHUB_CA and TWINHUB_MQTT_PORT (the devices are paho on MQTT over
TLS, tcp_device.py).
"""

import json
import os
import threading
import time
from contextlib import contextmanager

import pytest
from azure.eventhub import EventHubConsumerClient, TransportType
from azure.eventhub.exceptions import AuthenticationError, EventHubError

from tcp_device import CA, HUB, Device, new_device

EVENTHUB = os.environ["TWINHUB_EVENTHUB_CONNECTION_STRING"]
# AMQP over WebSocket on the hub's https port (wss://{HostName}/$servicebus/websocket), the
# transport that works on Cloudflare too: the endpoint's connection string without the emulator
# switch, the test CA passed as the SDK takes it. The SDK dials 443 for WebSockets whatever the
# Endpoint's port; the test hub is on another, named by the SDK's `custom_endpoint_address`
# (its option for proxies and gateways; a hub on 443 needs none).
_PARTS = dict(p.split("=", 1) for p in EVENTHUB.split(";") if p)
EVENTHUB_WS = (f"Endpoint=sb://{HUB}/;SharedAccessKeyName={_PARTS['SharedAccessKeyName']};"
               f"SharedAccessKey={_PARTS['SharedAccessKey']};EntityPath={_PARTS['EntityPath']}")
WEBSOCKET = {"transport_type": TransportType.AmqpOverWebsocket, "connection_verify": CA,
             "custom_endpoint_address": f"https://{HUB}"}


class Consumer:
    """An EventHubConsumerClient receiving every partition in a thread, keeping the events of
    one device."""

    def __init__(self, device_id, connection_string=EVENTHUB, client_options=None, **receive_options):
        self.events = []
        self.client = EventHubConsumerClient.from_connection_string(
            connection_string, consumer_group="$Default", **(client_options or {}))
        self.device_id = device_id

        def on_event(partition_context, event):
            if event is None:
                return
            if event.system_properties.get(b"iothub-connection-device-id") == device_id.encode():
                self.events.append((partition_context.partition_id, event))

        options = {"starting_position": "-1", **receive_options}
        self.thread = threading.Thread(target=self.client.receive, kwargs={"on_event": on_event, **options}, daemon=True)
        self.thread.start()

    def wait_for(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.events) >= n, f"{len(self.events)} of {n} events arrived"
        return [e for _, e in self.events]

    def close(self):
        self.client.close()
        self.thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


@contextmanager
def telemetry_device(device_id):
    """A new device on MQTT over TLS, closed afterwards."""
    device = Device(device_id, new_device(device_id))
    try:
        yield device
    finally:
        device.close()


def send_telemetry(device, device_id, readings):
    """The article's telemetry: a JSON reading, with `alert=high_temperature` when it is hot."""
    for i, temperature in enumerate(readings):
        properties = "$.ct=application%2Fjson&$.ce=utf-8"
        if temperature > 30:
            properties += "&alert=high_temperature"
        body = json.dumps({"deviceId": device_id, "temperature": temperature, "n": i})
        info = device.client.publish(f"devices/{device_id}/messages/events/{properties}", body, qos=1)
        info.wait_for_publish(timeout=10)


def test_a_consumer_reads_the_devices_telemetry_with_its_properties():
    device_id = "eh-article"
    with telemetry_device(device_id) as device, Consumer(device_id) as consumer:
        send_telemetry(device, device_id, [22.5, 31.5, 24.0])
        events = consumer.wait_for(3)
        bodies = [json.loads(e.body_as_str()) for e in events]
        assert [b["temperature"] for b in bodies] == [22.5, 31.5, 24.0]
        assert events[1].properties == {b"alert": b"high_temperature"}, events[1].properties
        assert events[0].properties in (None, {})
        assert events[1].system_properties[b"content-type"] == b"application/json"
        assert events[1].system_properties[b"iothub-message-source"] == b"Telemetry"
        numbers = [e.sequence_number for e in events]
        assert numbers == sorted(numbers) and len(set(numbers)) == 3
        assert [e.offset for e in events] == [str(n) for n in numbers]
        assert all(e.enqueued_time is not None for e in events)
        # One device, one partition.
        assert len({p for p, _ in consumer.events}) == 1


def test_a_consumer_over_websocket_reads_the_same_events():
    device_id = "eh-websocket"
    with telemetry_device(device_id) as device, Consumer(device_id, EVENTHUB_WS, WEBSOCKET) as consumer:
        send_telemetry(device, device_id, [35.0])
        [event] = consumer.wait_for(1)
        assert event.properties == {b"alert": b"high_temperature"}
        with EventHubConsumerClient.from_connection_string(EVENTHUB_WS, consumer_group="$Default", **WEBSOCKET) as client:
            assert client.get_partition_ids() == ["0", "1", "2", "3"]


def test_management_queries_and_start_positions():
    device_id = "eh-positions"
    with telemetry_device(device_id) as device:
        send_telemetry(device, device_id, [20.0, 21.0, 22.0, 23.0])
        with Consumer(device_id) as first:
            events = first.wait_for(4)
        with EventHubConsumerClient.from_connection_string(EVENTHUB, consumer_group="$Default") as client:
            props = client.get_eventhub_properties()
            assert props["partition_ids"] == ["0", "1", "2", "3"], props
            last = events[-1].sequence_number
            partition = next(p for p in props["partition_ids"]
                             if client.get_partition_properties(p)["last_enqueued_sequence_number"] >= last)
            info = client.get_partition_properties(partition)
            assert info["is_empty"] is False and info["id"] == partition
        # From an offset (exclusive), from a sequence number (inclusive), from the end.
        n = lambda e: json.loads(e.body_as_str())["n"]  # noqa: E731
        with Consumer(device_id, starting_position=events[1].offset) as after_second:
            assert [n(e) for e in after_second.wait_for(2)] == [2, 3]
        with Consumer(device_id, starting_position=events[2].sequence_number, starting_position_inclusive=True) as third:
            assert [n(e) for e in third.wait_for(2)] == [2, 3]
        with Consumer(device_id, starting_position="@latest") as latest:
            time.sleep(2)
            send_telemetry(device, device_id, [30.0])
            assert [n(e) for e in latest.wait_for(1)] == [0]


def test_a_wrong_key_is_refused():
    parts = dict(p.split("=", 1) for p in EVENTHUB.split(";") if p)
    parts["SharedAccessKey"] = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="
    wrong = ";".join(f"{k}={v}" for k, v in parts.items())
    client = EventHubConsumerClient.from_connection_string(wrong, consumer_group="$Default", retry_total=0)
    with client, pytest.raises((AuthenticationError, EventHubError)):
        client.get_eventhub_properties()

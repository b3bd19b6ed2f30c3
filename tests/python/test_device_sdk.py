"""The real azure-iot-device 2.14.0 SDK against twinhub, on its default transport (MQTT over TLS
on port 8883) and on MQTT over WebSocket (port 443), running the article's device class
(article_device.py), with azure-iot-hub 2.7.0 as the backend.

Run by tests/tests/python_device_sdk.rs, which starts the hub over https on port 443 with MQTT
over TLS on 8883 and passes TWINHUB_CONNECTION_STRING (owner policy, HostName=localhost),
TWINHUB_CA (the test CA file), REQUESTS_CA_BUNDLE and SSL_CERT_FILE (the CA, which is how the
default transport trusts it). TWINHUB_DEVICE_TRANSPORTS picks the transports (`wrangler dev`
takes no TCP, so only the WebSocket there).
"""

import asyncio
import json
import os
import time
import urllib.request
import ssl

import pytest

from azure.iot.device import MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

import sas
from article_device import IoTDevice
from waiting import eventually_async as eventually
from clients import device_client as sdk_client, must_refuse

OWNER = os.environ["TWINHUB_CONNECTION_STRING"]
TRANSPORTS = os.environ.get("TWINHUB_DEVICE_TRANSPORTS", "mqtt,websocket").split(",")
# One device per transport, so the two runs do not share a twin.
DEVICE_IDS = {"websocket": "sensor-001", "mqtt": "sensor-002"}


# Where stored telemetry is read: this hub, or (upstream mode, tests/tests/upstream.rs) the
# hub behind it, since a hub in upstream mode keeps no telemetry of its own.
TELEMETRY_BASE = os.environ.get("TWINHUB_TELEMETRY_BASE", "https://localhost")
TELEMETRY_CS = os.environ.get("TWINHUB_TELEMETRY_CS", OWNER)


def telemetry(device_id):
    request = urllib.request.Request(
        f"{TELEMETRY_BASE}/api/devices/{device_id}/telemetry?limit=100",
        headers={"Authorization": sas.owner_token(TELEMETRY_CS)},
    )
    context = ssl.create_default_context(cafile=os.environ["TWINHUB_CA"]) if TELEMETRY_BASE.startswith("https") else None
    with urllib.request.urlopen(request, context=context) as response:
        return json.load(response)["messages"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_article_device_end_to_end(transport):
    asyncio.run(article_device_end_to_end(transport))


async def article_device_end_to_end(transport):
    DEVICE_ID = DEVICE_IDS[transport]
    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    registry.create_device_with_sas(DEVICE_ID, None, None, "enabled")
    key = registry.get_device(DEVICE_ID).authentication.symmetric_key.primary_key
    registry.update_twin(
        DEVICE_ID, Twin(properties=TwinProperties(desired={"telemetryInterval": 1, "temperatureThreshold": 22})), "*"
    )

    def reported():
        return registry.get_twin(DEVICE_ID).properties.reported

    cs = f"HostName=localhost;DeviceId={DEVICE_ID};SharedAccessKey={key}"
    device = IoTDevice(cs)
    if transport == "websocket":
        # The article's class as is; only its (not yet connected) client is swapped.
        device.client = sdk_client(cs, transport)

    # A method handler answers direct methods (getConfig returns the current config).
    async def on_method(request):
        payload = device.current_config if request.name == "getConfig" else None
        status = 200 if request.name == "getConfig" else 404
        await device.client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))

    # The article's run(): connect, get the twin, apply desired, then the telemetry loop.
    await device.connect()
    device.client.on_method_request_received = on_method
    loop_task = asyncio.create_task(device.send_telemetry_loop())
    try:
        assert device.current_config == {"telemetryInterval": 1, "temperatureThreshold": 22}
        await eventually(lambda: reported().get("telemetryInterval") == 1, "reported telemetryInterval 1")
        assert registry.get_twin(DEVICE_ID).connection_state == "Connected"

        # The bulk-update step of the article: desired firmwareVersion; the device downloads,
        # waits, and reports completed.
        twin = registry.get_twin(DEVICE_ID)
        registry.update_twin(DEVICE_ID, Twin(properties=TwinProperties(desired={"firmwareVersion": "2.1.0"})), twin.etag)
        await eventually(lambda: reported().get("firmwareUpdateStatus") == "downloading", "downloading", 15)
        await eventually(
            lambda: reported().get("firmwareUpdateStatus") == "completed" and reported().get("firmwareVersion") == "2.1.0",
            "firmware completed",
            30,
        )
        assert "lastFirmwareUpdate" in reported()

        # Telemetry every second, with the article's fields; connectivity reported alongside.
        await eventually(lambda: len(telemetry(DEVICE_ID)) >= 2, "two telemetry messages", 15)
        message = telemetry(DEVICE_ID)[-1]["body"]
        assert {"temperature", "humidity", "timestamp"} <= set(message)
        if message["temperature"] > 22:
            assert message["alert"] == "high_temperature"
        assert reported()["connectivity"]["type"] == "wifi"

        # A direct method, invoked with the service SDK, answered by the device.
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            None,
            lambda: registry.invoke_device_method(DEVICE_ID, CloudToDeviceMethod(method_name="getConfig", payload={})),
        )
        assert result.status == 200
        assert result.payload["temperatureThreshold"] == 22
    finally:
        loop_task.cancel()

    # Offline: a desired change made while the device is away is applied after it reconnects.
    await device.client.disconnect()
    await eventually(lambda: registry.get_twin(DEVICE_ID).connection_state == "Disconnected", "Disconnected", 15)
    twin = registry.get_twin(DEVICE_ID)
    registry.update_twin(DEVICE_ID, Twin(properties=TwinProperties(desired={"telemetryInterval": 7})), twin.etag)
    await device.client.connect()
    await eventually(lambda: reported().get("telemetryInterval") == 7, "offline change applied after reconnect", 30)
    assert device.current_config["telemetryInterval"] == 7
    await device.client.shutdown()


def test_plain_paho_client():
    """A plain MQTT client (paho-mqtt 1.6, as the Azure SDK ships it) speaks to the endpoint
    directly: IoT Hub's username and SAS password, its topics, a reported patch round trip."""
    import queue
    import paho.mqtt.client as mqtt

    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    registry.create_device_with_sas("paho-1", None, None, "enabled")
    key = registry.get_device("paho-1").authentication.symmetric_key.primary_key
    password = sas.sign("localhost/devices/paho-1", key)

    inbox = queue.Queue()
    client = mqtt.Client(client_id="paho-1", protocol=mqtt.MQTTv311, transport="websockets")
    client.ws_set_options(path="/$iothub/websocket")
    client.tls_set(ca_certs=os.environ["TWINHUB_CA"])
    client.username_pw_set("localhost/paho-1/?api-version=2021-04-12", password)
    client.on_message = lambda _c, _u, msg: inbox.put((msg.topic, msg.payload))
    connected = queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc: connected.put(rc)
    client.connect("localhost", 443, keepalive=30)
    client.loop_start()
    try:
        assert connected.get(timeout=15) == 0
        client.subscribe("$iothub/twin/res/#", qos=1)
        time.sleep(0.5)
        client.publish("$iothub/twin/PATCH/properties/reported/?$rid=p1", json.dumps({"via": "paho"}), qos=1)
        topic, payload = inbox.get(timeout=15)
        assert topic == "$iothub/twin/res/204/?$rid=p1&$version=2", topic
        assert registry.get_twin("paho-1").properties.reported["via"] == "paho"
    finally:
        client.loop_stop()
        client.disconnect()


def test_deleting_a_device_ends_its_sdk_session_and_its_key():
    asyncio.run(deleting_a_device_ends_its_sdk_session_and_its_key())


async def deleting_a_device_ends_its_sdk_session_and_its_key():
    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    doomed = "doomed-001"
    registry.create_device_with_sas(doomed, None, None, "enabled")
    old_key = registry.get_device(doomed).authentication.symmetric_key.primary_key
    registry.update_twin(doomed, Twin(tags={"owner": "old"}), "*")

    def client(key):
        cs = f"HostName=localhost;DeviceId={doomed};SharedAccessKey={key}"
        return sdk_client(cs, "websocket", connection_retry=False)

    old = client(old_key)
    await old.connect()
    await old.patch_twin_reported_properties({"alive": True})
    assert old.connected

    # Deleted: the SDK's session ends at once; the id is gone.
    registry.delete_device(doomed)
    await eventually(lambda: not old.connected, "the old session dropped", 15)
    await old.shutdown()

    # Re-created with the same id: new keys, an empty twin; the old key is refused.
    registry.create_device_with_sas(doomed, None, None, "enabled")
    new_key = registry.get_device(doomed).authentication.symmetric_key.primary_key
    assert new_key != old_key
    twin = registry.get_twin(doomed)
    assert not twin.tags, twin.tags
    assert "alive" not in twin.properties.reported
    await must_refuse(client(old_key), "the deleted device's key still connects")
    fresh = client(new_key)
    await fresh.connect()
    assert (await fresh.get_twin())["reported"].get("alive") is None
    await fresh.shutdown()
    registry.delete_device(doomed)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_desired_changes_made_while_away_arrive_after_reconnect(transport):
    asyncio.run(desired_changes_made_while_away_arrive_after_reconnect(transport))


async def desired_changes_made_while_away_arrive_after_reconnect(transport):
    """Catch-up on reconnect (beyond IoT Hub): an SDK device whose code never GETs its twin still
    gets the desired changes made while it was away, as one patch with `$version`."""
    device_id = f"catch-up-{transport}"
    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    registry.create_device_with_sas(device_id, None, None, "enabled")
    key = registry.get_device(device_id).authentication.symmetric_key.primary_key
    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"mode": "eco", "gone": 1})), "*")

    patches = []
    client = sdk_client(f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}", transport)
    client.on_twin_desired_properties_patch_received = patches.append
    await client.connect()
    try:
        # While connected: the change is pushed as it happens (IoT Hub's behaviour).
        await asyncio.sleep(1)
        registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"mode": "boost"})), "*")
        await eventually(lambda: any(p.get("mode") == "boost" for p in patches), "the live patch", 15)
        assert not any("gone" in p for p in patches), "what was set before the first connect is not replayed"

        await client.disconnect()
        await eventually(
            lambda: registry.get_twin(device_id).connection_state == "Disconnected", "Disconnected", 15
        )
        registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"interval": 7, "gone": None})), "*")
        registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"mode": "night"})), "*")
        version = registry.get_twin(device_id).properties.desired["$version"]

        await client.connect()
        await eventually(lambda: any(p.get("$version") == version for p in patches), "the catch-up patch", 15)
        caught = [p for p in patches if p.get("$version") == version]
        assert caught == [{"interval": 7, "gone": None, "mode": "night", "$version": version}], patches
        # Once caught up, nothing more is sent for the same version.
        await asyncio.sleep(1)
        assert len([p for p in patches if p.get("$version") == version]) == 1
    finally:
        await client.shutdown()
    registry.delete_device(device_id)


def test_one_session_per_device_across_transports():
    if len(TRANSPORTS) < 2:
        pytest.skip("needs both transports")
    asyncio.run(one_session_per_device_across_transports())


async def one_session_per_device_across_transports():
    """A second connection replaces the first whichever transport either uses."""
    device_id = "two-transports"
    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    registry.create_device_with_sas(device_id, None, None, "enabled")
    key = registry.get_device(device_id).authentication.symmetric_key.primary_key
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"
    ws = sdk_client(cs, "websocket", connection_retry=False)
    tcp = sdk_client(cs, "mqtt", connection_retry=False)
    try:
        await ws.connect()
        await tcp.connect()
        await eventually(lambda: not ws.connected, "the WebSocket session replaced by the 8883 one", 15)
        await tcp.patch_twin_reported_properties({"via": "tcp"})
        await ws.connect()
        await eventually(lambda: not tcp.connected, "the 8883 session replaced by the WebSocket one", 15)
        await ws.patch_twin_reported_properties({"via": "websocket"})
        assert registry.get_twin(device_id).properties.reported["via"] == "websocket"
    finally:
        await ws.shutdown()
        await tcp.shutdown()
    registry.delete_device(device_id)

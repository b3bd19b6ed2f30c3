"""Module identities, module twins and module sessions with the real SDKs, unmodified:
azure-iot-hub 2.7.0's module calls, and azure-iot-device 2.14.0's IoTHubModuleClient on its
default transport (MQTT over TLS on 8883) and on MQTT over WebSocket (443).

Run by tests/tests/modules.rs, which starts the hub as the device suite does and passes the same
environment (TWINHUB_CONNECTION_STRING, TWINHUB_CA, REQUESTS_CA_BUNDLE, SSL_CERT_FILE,
TWINHUB_DEVICE_TRANSPORTS).
"""

import asyncio
import base64
import json
import os
import ssl
import urllib.request
import uuid

import pytest
from azure.iot.device import Message, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

import sas
from waiting import eventually_async as eventually
from clients import device_client, module_client, must_refuse

OWNER = os.environ["TWINHUB_CONNECTION_STRING"]
TRANSPORTS = os.environ.get("TWINHUB_DEVICE_TRANSPORTS", "mqtt,websocket").split(",")


@pytest.fixture()
def registry():
    return IoTHubRegistryManager.from_connection_string(OWNER)


@pytest.fixture()
def device_id(registry):
    device_id = f"host-{uuid.uuid4().hex[:8]}"
    registry.create_device_with_sas(device_id, None, None, "enabled")
    yield device_id
    try:
        registry.delete_device(device_id)
    except HttpOperationError:
        pass


def refused(call):
    """The status and IoT Hub error code of a call that must fail."""
    with pytest.raises(HttpOperationError) as err:
        call()
    response = err.value.response
    return response.status_code, response.headers.get("iothub-errorcode")


def module_ids(registry, device_id):
    return sorted(m.module_id for m in registry.get_modules(device_id))


def test_module_registry(registry, device_id):
    created = registry.create_module_with_sas(device_id, "filter", "iotEdge", None, None)
    assert (created.device_id, created.module_id, created.managed_by) == (device_id, "filter", "iotEdge")
    assert len(created.authentication.symmetric_key.primary_key) == 44
    assert created.generation_id and created.etag
    assert refused(lambda: registry.create_module_with_sas(device_id, "filter", None, None, None)) == (
        409,
        "ModuleAlreadyExistsOnDevice",
    )
    got = registry.get_module(device_id, "filter")
    assert got.authentication.symmetric_key.primary_key == created.authentication.symmetric_key.primary_key

    registry.create_module_with_sas(device_id, "second", None, None, None)
    assert module_ids(registry, device_id) == ["filter", "second"]

    # An update with new keys (the SDK sends If-Match: "*"): the primary changes, the
    # secondary (None) is kept, the etag moves.
    key = base64.b64encode(bytes(range(32))).decode()
    updated = registry.update_module_with_sas(device_id, "filter", "iotEdge", None, key, None)
    assert updated.authentication.symmetric_key.primary_key == key
    assert updated.authentication.symmetric_key.secondary_key == got.authentication.symmetric_key.secondary_key
    assert updated.etag != got.etag

    assert refused(lambda: registry.get_module(device_id, "nope")) == (404, "ModuleNotFound")
    assert refused(lambda: registry.create_module_with_sas("no-such-device-x1", "m", None, None, None)) == (
        404,
        "DeviceNotFound",
    )
    assert refused(lambda: registry.create_module_with_sas(device_id, "bad id", None, None, None))[0] == 400
    assert module_ids(registry, device_id) == ["filter", "second"]

    registry.delete_module(device_id, "second")
    assert module_ids(registry, device_id) == ["filter"]
    assert refused(lambda: registry.get_module_twin(device_id, "second")) == (404, "ModuleNotFound")

    # Modules are not devices: the device list and the registry statistics leave them out.
    listed = [d.device_id for d in registry.get_devices()]
    assert device_id in listed and not any("/" in d for d in listed)

    # Deleting the device deletes its modules.
    registry.delete_device(device_id)
    assert refused(lambda: registry.get_module(device_id, "filter")) == (404, "ModuleNotFound")


def test_module_twin_and_query(registry, device_id):
    registry.create_module_with_sas(device_id, "sensor", None, None, None)
    twin = registry.get_module_twin(device_id, "sensor")
    assert (twin.device_id, twin.module_id) == (device_id, "sensor")
    assert twin.etag == "AAAAAAAAAAE="

    patch = Twin(tags={"role": "filter"}, properties=TwinProperties(desired={"threshold": 5}))
    updated = registry.update_module_twin(device_id, "sensor", patch, twin.etag)
    assert updated.tags == {"role": "filter"}
    assert updated.properties.desired["threshold"] == 5
    assert updated.properties.desired["$version"] == 2
    assert updated.properties.desired["$metadata"]["threshold"]["$lastUpdatedVersion"] == 2
    # A stale etag: 412, nothing changed.
    stale = Twin(tags={"role": "other"})
    assert refused(lambda: registry.update_module_twin(device_id, "sensor", stale, twin.etag))[0] == 412

    replaced = registry.replace_module_twin(
        device_id, "sensor", Twin(tags={"role": "router"}, properties=TwinProperties(desired={"threshold": 7}))
    )
    assert replaced.tags == {"role": "router"}
    assert replaced.properties.desired["threshold"] == 7
    # The device's own twin is another twin.
    assert not registry.get_twin(device_id).tags

    query = f"SELECT * FROM devices.modules WHERE deviceId = '{device_id}' AND tags.role = 'router'"
    found = registry.query_iot_hub(QuerySpecification(query=query)).items
    assert [(t.device_id, t.module_id) for t in found] == [(device_id, "sensor")]
    devices = registry.query_iot_hub(QuerySpecification(query=f"SELECT * FROM devices WHERE deviceId = '{device_id}'"))
    assert [(t.device_id, t.module_id) for t in devices.items] == [(device_id, None)]


def stored_telemetry(device_id, module_id):
    request = urllib.request.Request(
        f"https://localhost/api/devices/{device_id}/modules/{module_id}/telemetry?limit=10",
        headers={"Authorization": sas.owner_token(OWNER)},
    )
    context = ssl.create_default_context(cafile=os.environ["TWINHUB_CA"])
    with urllib.request.urlopen(request, context=context) as response:
        return json.load(response)["messages"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_module_client(transport, registry, device_id):
    asyncio.run(module_session(transport, registry, device_id))


async def module_session(transport, registry, device_id):
    module = registry.create_module_with_sas(device_id, "agent", None, None, None)
    key = module.authentication.symmetric_key.primary_key
    cs = f"HostName=localhost;DeviceId={device_id};ModuleId=agent;SharedAccessKey={key}"
    client = module_client(cs, transport)
    patches = []
    client.on_twin_desired_properties_patch_received = patches.append

    async def on_method(request):
        response = MethodResponse.create_from_method_request(request, 200, {"echo": request.payload})
        await client.send_method_response(response)

    client.on_method_request_received = on_method
    await client.connect()
    twin = await client.get_twin()
    assert twin["desired"]["$version"] == 1

    await client.patch_twin_reported_properties({"state": "running"})
    assert registry.get_module_twin(device_id, "agent").properties.reported["state"] == "running"
    assert "state" not in registry.get_twin(device_id).properties.reported

    registry.update_module_twin(device_id, "agent", Twin(properties=TwinProperties(desired={"mode": "fast"})), "*")
    await eventually(lambda: any(p.get("mode") == "fast" for p in patches), "the desired patch")

    call = CloudToDeviceMethod(method_name="ping", payload={"n": 1}, response_timeout_in_seconds=30)
    result = registry.invoke_device_module_method(device_id, "agent", call)
    assert (result.status, result.payload) == (200, {"echo": {"n": 1}})

    await client.send_message(Message(json.dumps({"temperature": 21.5})))
    messages = stored_telemetry(device_id, "agent")
    assert [m["body"] for m in messages][-1:] == [{"temperature": 21.5}], messages

    # The device's own session is another session: both stay connected.
    device_key = registry.get_device(device_id).authentication.symmetric_key.primary_key
    device = device_client(f"HostName=localhost;DeviceId={device_id};SharedAccessKey={device_key}", "websocket")
    await device.connect()
    await device.patch_twin_reported_properties({"host": "up"})
    assert client.connected and device.connected
    assert "host" not in registry.get_module_twin(device_id, "agent").properties.reported
    await device.shutdown()

    # The device's key does not open the module.
    impostor = module_client(
        f"HostName=localhost;DeviceId={device_id};ModuleId=agent;SharedAccessKey={device_key}",
        transport,
        connection_retry=False,
    )
    await must_refuse(impostor, "the device's key opened its module")

    # Deleted: the module's session ends at once.
    registry.delete_module(device_id, "agent")
    await eventually(lambda: not client.connected, "the module's session dropped", 15)
    await client.shutdown()

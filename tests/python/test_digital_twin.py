"""IoT Plug and Play's digital twin API with the real SDKs, unmodified: azure-iot-hub 2.7.0's
DigitalTwinClient (get, update with JSON Patch, invoke a root and a component command) against
a device on azure-iot-device 2.14.0 announcing its model, acknowledging writable properties
in Plug and Play form and answering commands. Run by tests/tests/plug_and_play.rs.
"""

import asyncio
import os

from azure.iot.device import MethodResponse
from azure.iot.hub import DigitalTwinClient, IoTHubRegistryManager
from msrest.exceptions import HttpOperationError
from waiting import eventually_async as eventually
from clients import device_client

OWNER = os.environ["TWINHUB_CONNECTION_STRING"]
MODEL = "dtmi:com:example:TemperatureController;1"


def test_digital_twin_client():
    asyncio.run(digital_twin_client())


async def digital_twin_client():
    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    twins = DigitalTwinClient.from_connection_string(OWNER)
    device_id = "controller-1"
    registry.create_device_with_sas(device_id, None, None, "enabled")
    key = registry.get_device(device_id).authentication.symmetric_key.primary_key
    cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"
    device = device_client(cs, "websocket", product_info=MODEL)

    async def on_patch(patch):
        # Plug and Play: acknowledge each writable property with its value and version.
        version = patch["$version"]
        ack = {}
        for name, value in patch.items():
            if name.startswith("$"):
                continue
            if isinstance(value, dict) and value.get("__t") == "c":
                ack[name] = {"__t": "c"}
                for prop, v in value.items():
                    if prop != "__t":
                        ack[name][prop] = {"value": v, "ac": 200, "av": version, "ad": "ok"}
            else:
                ack[name] = {"value": value, "ac": 200, "av": version, "ad": "ok"}
        await device.patch_twin_reported_properties(ack)

    async def on_method(request):
        payload = {"command": request.name, "got": request.payload}
        await device.send_method_response(MethodResponse.create_from_method_request(request, 201, payload))

    device.on_twin_desired_properties_patch_received = on_patch
    device.on_method_request_received = on_method
    await device.connect()
    await device.patch_twin_reported_properties(
        {"serialNumber": "SN-1", "thermostat1": {"__t": "c", "maxTempSinceLastReboot": 31.5}}
    )

    twin = twins.get_digital_twin(device_id)
    assert twin["$dtId"] == device_id
    assert twin["$metadata"]["$model"] == MODEL
    assert twin["serialNumber"] == "SN-1"
    assert twin["thermostat1"]["maxTempSinceLastReboot"] == 31.5

    patch = [
        {"op": "add", "path": "/targetHumidity", "value": 40},
        {"op": "add", "path": "/thermostat1/targetTemperature", "value": 22.5},
    ]
    twins.update_digital_twin(device_id, patch)

    def acknowledged():
        t = twins.get_digital_twin(device_id)
        meta = t["thermostat1"]["$metadata"].get("targetTemperature", {})
        return t.get("targetHumidity") == 40 and meta.get("ackCode") == 200 and meta.get("desiredValue") == 22.5

    await eventually(acknowledged, "the writable properties acknowledged")
    desired = registry.get_twin(device_id).properties.desired
    assert desired["thermostat1"] == {"__t": "c", "targetTemperature": 22.5}

    root = twins.invoke_command(device_id, "reboot", {"delay": 1})
    assert root == {"command": "reboot", "got": {"delay": 1}}
    component = twins.invoke_component_command(device_id, "thermostat1", "getMaxMinReport", "2026-12-01")
    assert component == {"command": "thermostat1*getMaxMinReport", "got": "2026-12-01"}

    # Refused whole: a read-only path, an unsupported operation; nothing changed.
    before = registry.get_twin(device_id).properties.desired["$version"]
    for bad in (
        [{"op": "add", "path": "/$metadata/x", "value": 1}],
        [{"op": "move", "from": "/a", "path": "/b"}],
        [{"op": "add", "path": "/a/b/c", "value": 1}],
    ):
        try:
            twins.update_digital_twin(device_id, bad)
            raise AssertionError(f"accepted {bad}")
        except HttpOperationError as e:
            answer = (e.response.status_code, e.response.headers.get("iothub-errorcode"))
            assert answer == (400, "ArgumentInvalid"), answer
    assert registry.get_twin(device_id).properties.desired["$version"] == before

    await device.shutdown()
    registry.delete_device(device_id)

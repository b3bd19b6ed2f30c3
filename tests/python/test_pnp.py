"""IoT Plug and Play with the real azure-iot-device 2.14.0 SDK, unmodified: a device announcing its
model with `product_info="dtmi:..."` (sent as `model-id` in the MQTT user name) on the SDK's
default transport (8883) and on WebSocket; the twin's `modelId` (azure-iot-hub 2.7.0) and a query
on it. Run by tests/tests/plug_and_play.rs, with the device suite's environment.
"""

import asyncio
import json
import os
import ssl
import urllib.request

import pytest
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import QuerySpecification

import sas
from clients import device_client, must_refuse

OWNER = os.environ["TWINHUB_CONNECTION_STRING"]
TRANSPORTS = os.environ.get("TWINHUB_DEVICE_TRANSPORTS", "mqtt,websocket").split(",")
MODEL = "dtmi:com:example:Thermostat;1"


def model_id(device_id):
    """The twin's `modelId`, read over REST (azure-iot-hub 2.7.0's Twin model has no field for it)."""
    request = urllib.request.Request(
        f"https://localhost/twins/{device_id}?api-version=2021-04-12",
        headers={"Authorization": sas.owner_token(OWNER)},
    )
    context = ssl.create_default_context(cafile=os.environ["TWINHUB_CA"])
    with urllib.request.urlopen(request, context=context) as response:
        return json.load(response)["modelId"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_device_announces_its_model(transport):
    asyncio.run(announces_its_model(transport))


async def announces_its_model(transport):

    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    device_id = f"thermostat-{transport}"
    registry.create_device_with_sas(device_id, None, None, "enabled")
    try:
        key = registry.get_device(device_id).authentication.symmetric_key.primary_key
        cs = f"HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"
        assert model_id(device_id) == ""

        client = device_client(cs, transport, product_info=MODEL)
        await client.connect()
        await client.patch_twin_reported_properties({"targetTemperature": {"value": 21, "ac": 200, "av": 1}})
        assert model_id(device_id) == MODEL
        query = QuerySpecification(query=f"SELECT * FROM devices WHERE modelId = '{MODEL}'")
        assert device_id in [t.device_id for t in registry.query_iot_hub(query).items]
        await client.shutdown()

        # A product_info that looks like a DTMI but is not one is refused at CONNECT, not dropped.
        bad = device_client(cs, transport, product_info="dtmi:com:example:Thermostat", connection_retry=False)
        await must_refuse(bad, "a malformed model id was accepted")
        assert model_id(device_id) == MODEL
    finally:
        registry.delete_device(device_id)

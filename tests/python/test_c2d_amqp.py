"""Cloud-to-device over AMQP with the real azure-iot-hub 2.7.0 SDK, unmodified:
`IoTHubRegistryManager.send_c2d_message` opens AMQP over TLS on 5671 (uamqp), puts its token on
$cbs and sends to /messages/devicebound; the article's device (azure-iot-device on its default
MQTT over TLS) receives the message with its properties. A message for a device that does not
exist is refused. Run by tests/tests/amqp_service.rs against the hub on 443 (AMQPS on 5671),
trusting the test CA through SSL_CERT_FILE, as uamqp's OpenSSL reads it.
"""

import asyncio
import os
import uuid

import pytest
from azure.iot.hub import IoTHubRegistryManager

from clients import device_client

OWNER = os.environ["TWINHUB_CONNECTION_STRING"]
HUB = dict(p.split("=", 1) for p in OWNER.split(";"))["HostName"]


def test_a_service_message_reaches_the_device():
    registry = IoTHubRegistryManager.from_connection_string(OWNER)
    device_id = f"c2d-amqp-{uuid.uuid4().hex[:6]}"
    registry.create_device_with_sas(device_id, None, None, "enabled")
    key = registry.get_device(device_id).authentication.symmetric_key.primary_key
    cs = f"HostName={HUB};DeviceId={device_id};SharedAccessKey={key}"

    async def run():
        client = device_client(cs, "mqtt")
        await client.connect()
        received = asyncio.get_running_loop().create_future()
        client.on_message_received = lambda m: received.done() or received.set_result(m)
        await asyncio.sleep(1)
        await asyncio.to_thread(
            registry.send_c2d_message, device_id, '{"command":"blink"}',
            {"urgency": "high", "contentType": "application/json", "messageId": "m-42"},
        )
        message = await asyncio.wait_for(received, 20)
        await client.shutdown()
        return message

    message = asyncio.run(run())
    assert message.data == b'{"command":"blink"}'
    assert message.custom_properties == {"urgency": "high"}, message.custom_properties
    assert message.message_id == "m-42"
    assert message.content_type == "application/json"
    # To a device that does not exist: the hub refuses the delivery and the SDK raises.
    with pytest.raises(Exception):
        registry.send_c2d_message(f"no-such-{uuid.uuid4().hex[:6]}", "x")
    registry.delete_device(device_id)

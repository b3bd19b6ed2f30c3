"""The Azure device SDK's clients as the Python suites open them, and a connection that must be
refused."""

import os


def _on_transport(client_class, cs, transport, **options):
    # The SDK's default transport is MQTT on 8883, trusting the CA from SSL_CERT_FILE; over
    # WebSocket (443) the CA is passed in.
    if transport == "websocket":
        options.update(websockets=True, server_verification_cert=open(os.environ["TWINHUB_CA"]).read())
    return client_class.create_from_connection_string(cs, **options)


def device_client(cs, transport, **options):
    """An aio IoTHubDeviceClient on `transport` ("mqtt" or "websocket")."""
    from azure.iot.device.aio import IoTHubDeviceClient

    return _on_transport(IoTHubDeviceClient, cs, transport, **options)


def module_client(cs, transport, **options):
    """An aio IoTHubModuleClient on `transport` ("mqtt" or "websocket")."""
    from azure.iot.device.aio import IoTHubModuleClient

    return _on_transport(IoTHubModuleClient, cs, transport, **options)


async def must_refuse(client, what):
    """Connects `client`, which the hub must refuse (AssertionError naming `what` if it does
    not); shuts the client down either way."""
    from azure.iot.device.exceptions import ClientError, ConnectionFailedError, CredentialError

    try:
        await client.connect()
        raise AssertionError(what)
    except (ClientError, ConnectionFailedError, CredentialError):
        pass
    finally:
        await client.shutdown()

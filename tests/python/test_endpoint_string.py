"""The Event Hub-compatible connection string the dashboard shows (tests/browser/endpoints.mjs),
used as shown by the real azure-eventhub client over AMQP on WebSocket at the page's own host.
The test hub serves plain http, so the SDK's emulator switch turns its TLS off and
`custom_endpoint_address` names the port; against a hub on 443 with TLS neither is needed.
Run by tests/tests/dashboard.rs with TWINHUB_SHOWN_CONNECTION_STRING.
"""

import os

from azure.eventhub import EventHubConsumerClient, TransportType


def test_the_shown_string_connects():
    shown = os.environ["TWINHUB_SHOWN_CONNECTION_STRING"]
    host = shown.split("sb://", 1)[1].split("/", 1)[0]
    client = EventHubConsumerClient.from_connection_string(
        shown + ";UseDevelopmentEmulator=true",
        consumer_group="$Default",
        transport_type=TransportType.AmqpOverWebsocket,
        custom_endpoint_address=f"http://{host}",
    )
    with client:
        assert client.get_partition_ids() == ["0", "1", "2", "3"]

"""A consumer over AMQP-over-WebSocket outlives the connections it is given.

On Cloudflare an AMQP-over-WebSocket connection lives in one Worker request, whose calls to
objects (subrequests) are capped; the hub closes a connection with `amqp:connection:forced`
when it reaches its share (AMQP_SUBREQUESTS_PER_CONNECTION), and the unmodified azure-eventhub
consumer reconnects and resumes after the last event it got. Run by tests/tests/eventhub.rs
against a hub whose share is small, so the test crosses several such closes.
"""

import json
import time

from test_eventhub import EVENTHUB_WS, WEBSOCKET, Consumer, send_telemetry, telemetry_device


def test_a_websocket_consumer_outlives_its_connections():
    device_id = "eh-budget"
    readings = [20.0 + i for i in range(8)]
    with telemetry_device(device_id) as device, Consumer(device_id, EVENTHUB_WS, WEBSOCKET) as consumer:
        for reading in readings:
            send_telemetry(device, device_id, [reading])
            time.sleep(1.5)
        events = consumer.wait_for(len(readings), timeout=60)
        temperatures = [json.loads(e.body_as_str())["temperature"] for e in events]
        # Every event, in order, each once: the consumer resumed after the last one it had.
        assert temperatures == readings, temperatures

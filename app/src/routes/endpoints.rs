//! The hub's endpoint for backends: the Event Hub-compatible endpoint's connection string for
//! the signed-in policy, as `make dev` prints it for the plain AMQP port.

use crate::session::Session;
use leptos::prelude::*;

#[component]
pub fn EndpointsPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let eventhub = move || session.eventhub_connection_string().unwrap_or_default();
    view! {
        <section class="card endpoints">
            <h1>"Endpoints"</h1>
            <h2>"Event Hub-compatible endpoint"</h2>
            <p class="hint">"Device telemetry for backends that read IoT Hub's built-in endpoint: azure-eventhub consumers, Functions and Stream Analytics triggers. Each event carries the device's properties and IoT Hub's annotations (iothub-connection-device-id, x-opt-sequence-number, x-opt-enqueued-time)."</p>
            <label for="eventhub-cs">"Connection string (signed-in policy, this host)"</label>
            <textarea id="eventhub-cs" class="connection-string" readonly=true rows="3">{eventhub}</textarea>
            <p class="hint">"Over AMQP on WebSocket at /$servicebus/websocket, on both runtimes: azure-eventhub takes transport_type=TransportType.AmqpOverWebsocket (and custom_endpoint_address=\"https://host:port\" when this host is not on 443). Self-hosted, make dev also takes plain AMQP on 127.0.0.1:5672 (add UseDevelopmentEmulator=true and use that address), and AMQPS on 5671 with TLS."</p>
        </section>
    }
}

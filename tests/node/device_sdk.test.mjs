// The real Azure IoT Node SDKs against twinhub: azure-iot-device 1.18 on both MQTT transports of
// azure-iot-device-mqtt 1.16 (`Mqtt`: TLS on 8883, the default; `MqttWs`: WebSocket on 443) and
// both AMQP transports of azure-iot-device-amqp 1.14 (`Amqp`: TLS on 5671; `AmqpWs`: WebSocket on
// 443), as a
// device (`Client`) and as a module (`ModuleClient`), with azure-iothub 1.16 as the backend
// (registry, modules, twin updates, direct methods over HTTPS, C2D over AMQP), and
// @azure/event-hubs 6 reading the Event Hub-compatible endpoint.
//
// Run by tests/tests/node_device_sdk.rs (`node --test`), which starts the hub over https on 443
// with MQTT over TLS on 8883 and passes TWINHUB_CONNECTION_STRING (owner, HostName=localhost) and
// NODE_EXTRA_CA_CERTS (the test CA: how Node trusts a private CA, with no option in the code).

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Client: DeviceClient, ModuleClient, Message, SharedAccessKeyAuthenticationProvider } = require("azure-iot-device");
const { Mqtt, MqttWs } = require("azure-iot-device-mqtt");
const { Amqp, AmqpWs } = require("azure-iot-device-amqp");
const { NoRetry } = require("azure-iot-common");
const { Registry, Client: ServiceClient } = require("azure-iothub");
const { EventHubConsumerClient, earliestEventPosition } = require("@azure/event-hubs");
const WebSocket = require("ws");

const OWNER = process.env.TWINHUB_CONNECTION_STRING;
const parts = Object.fromEntries(OWNER.split(";").map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)]));
const registry = Registry.fromConnectionString(OWNER);
const service = ServiceClient.fromConnectionString(OWNER);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function eventually(check, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function ownerToken() {
  const sr = encodeURIComponent(parts.HostName);
  const se = Math.floor(Date.now() / 1000) + 600;
  const sig = createHmac("sha256", Buffer.from(parts.SharedAccessKey, "base64")).update(`${sr}\n${se}`).digest("base64");
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=iothubowner`;
}

async function telemetry(deviceId) {
  const r = await fetch(`https://${parts.HostName}/api/devices/${deviceId}/telemetry?limit=100`, {
    headers: { Authorization: ownerToken() },
  });
  assert.equal(r.status, 200);
  return (await r.json()).messages;
}

// A new enabled device: its primary key and connection string.
async function newDevice(deviceId) {
  await registry.create({ deviceId, status: "enabled" });
  const { responseBody: device } = await registry.get(deviceId);
  const key = device.authentication.symmetricKey.primaryKey;
  return { key, cs: `HostName=localhost;DeviceId=${deviceId};SharedAccessKey=${key}` };
}

// Opens `service` (the service SDK's AMQP client) and its feedback receiver: the array the
// delivery feedback records are collected in, each batch completed as it arrives.
async function feedbackRecords(service) {
  await service.open();
  const records = [];
  const receiver = await new Promise((resolve, reject) =>
    service.getFeedbackReceiver((e, r) => (e ? reject(e) : resolve(r))),
  );
  receiver.on("message", (m) => {
    records.push(...JSON.parse(m.data.toString()));
    receiver.complete(m, () => {});
  });
  return records;
}

// Cloud-to-device through twinhub's REST send (the service SDK's own `send`, over AMQP, has its test below).
async function sendC2d(deviceId, payload) {
  const r = await fetch(`https://${parts.HostName}/api/devices/${deviceId}/messages`, {
    method: "POST",
    headers: { Authorization: ownerToken(), "Content-Type": "application/json" },
    body: JSON.stringify({ payload }),
  });
  assert.equal(r.status, 202);
}

for (const [name, transport] of [["Mqtt", Mqtt], ["MqttWs", MqttWs], ["Amqp", Amqp], ["AmqpWs", AmqpWs]]) {
  test(`a device on ${name}: twin, desired pushes, telemetry, methods, C2D, catch-up`, async () => {
    const deviceId = `node-${name.toLowerCase()}`;
    await registry.create({ deviceId, status: "enabled" });
    const { responseBody: device } = await registry.get(deviceId);
    const key = device.authentication.symmetricKey.primaryKey;
    const client = DeviceClient.fromConnectionString(`HostName=localhost;DeviceId=${deviceId};SharedAccessKey=${key}`, transport);
    try {
      await client.open();
      const twin = await client.getTwin();
      const desired = [];
      twin.on("properties.desired", (patch) => desired.push(patch));

      // A reported patch round trip.
      await new Promise((resolve, reject) =>
        twin.properties.reported.update({ firmware: "1.0", transport: name }, (e) => (e ? reject(e) : resolve())),
      );
      const { responseBody: t1 } = await registry.getTwin(deviceId);
      assert.equal(t1.properties.reported.transport, name);
      assert.equal(t1.connectionState, "Connected");

      // A desired patch, pushed as it happens.
      await registry.updateTwin(deviceId, { properties: { desired: { interval: 5 } } }, "*");
      await eventually(() => desired.some((p) => p.interval === 5), "the desired push");

      // Telemetry, stored.
      await client.sendEvent(new Message(JSON.stringify({ temperature: 21.5 })));
      await eventually(async () => (await telemetry(deviceId)).some((m) => m.body.temperature === 21.5), "stored telemetry");

      // A direct method.
      client.onDeviceMethod("reboot", (request, response) => response.send(200, { after: request.payload.delay }));
      await sleep(500);
      const { result } = await service.invokeDeviceMethod(deviceId, { methodName: "reboot", payload: { delay: 3 } });
      assert.equal(result.status, 200);
      assert.deepEqual(result.payload, { after: 3 });

      // Cloud-to-device, completed by the SDK.
      const received = [];
      client.on("message", (msg) => {
        received.push(msg.getData().toString());
        client.complete(msg, () => {});
      });
      await sleep(500);
      await sendC2d(deviceId, "hello node");
      await eventually(() => received.includes("hello node"), "the C2D message");

      // Catch-up: desired changed while the device was away arrives after it reconnects,
      // without its code asking for the twin again. Over MQTT only: the SDK's AMQP transport
      // opens no twin links after an explicit close() and open() (it subscribes again after a
      // dropped connection), so there is nowhere to send the patch, as against IoT Hub.
      if (name.startsWith("Amqp")) return;
      await client.close();
      await eventually(async () => (await registry.getTwin(deviceId)).responseBody.connectionState === "Disconnected", "Disconnected");
      await registry.updateTwin(deviceId, { properties: { desired: { interval: 9, mode: "night" } } }, "*");
      await client.open();
      await eventually(() => desired.some((p) => p.interval === 9 && p.mode === "night"), "the catch-up patch");
    } finally {
      await client.close().catch(() => {});
      await registry.delete(deviceId).catch(() => {});
    }
  });
}

for (const [name, transport] of [["Mqtt", Mqtt], ["MqttWs", MqttWs]]) {
  test(`a module on ${name}: its own twin, desired pushes, methods and telemetry`, async () => {
    const deviceId = `node-host-${name.toLowerCase()}`;
    const moduleId = "agent";
    await registry.create({ deviceId, status: "enabled" });
    try {
      await registry.addModule({ deviceId, moduleId });
      const { responseBody: module } = await registry.getModule(deviceId, moduleId);
      assert.equal(module.moduleId, moduleId);
      const { responseBody: modules } = await registry.getModulesOnDevice(deviceId);
      assert.deepEqual(modules.map((m) => m.moduleId), [moduleId]);
      const key = module.authentication.symmetricKey.primaryKey;
      const client = ModuleClient.fromConnectionString(
        `HostName=localhost;DeviceId=${deviceId};ModuleId=${moduleId};SharedAccessKey=${key}`,
        transport,
      );
      try {
        await client.open();
        const twin = await client.getTwin();
        const desired = [];
        twin.on("properties.desired", (patch) => desired.push(patch));
        await new Promise((resolve, reject) =>
          twin.properties.reported.update({ role: "agent" }, (e) => (e ? reject(e) : resolve())),
        );
        const { responseBody: moduleTwin } = await registry.getModuleTwin(deviceId, moduleId);
        assert.equal(moduleTwin.moduleId, moduleId);
        assert.equal(moduleTwin.properties.reported.role, "agent");
        const { responseBody: deviceTwin } = await registry.getTwin(deviceId);
        assert.equal(deviceTwin.properties.reported.role, undefined);

        await registry.updateModuleTwin(deviceId, moduleId, { properties: { desired: { level: 3 } } }, "*");
        await eventually(() => desired.some((p) => p.level === 3), "the module's desired push");

        client.onMethod("ping", (request, response) => response.send(200, { pong: request.payload.n }));
        await sleep(500);
        const { result } = await service.invokeDeviceMethod(deviceId, moduleId, { methodName: "ping", payload: { n: 7 } });
        assert.equal(result.status, 200);
        assert.deepEqual(result.payload, { pong: 7 });

        await client.sendEvent(new Message(JSON.stringify({ level: 3 })));
        await eventually(async () => (await telemetry(`${deviceId}/modules/${moduleId}`)).some((m) => m.body.level === 3), "the module's stored telemetry");
      } finally {
        await client.close().catch(() => {});
      }
    } finally {
      await registry.delete(deviceId).catch(() => {});
    }
  });
}

test("configurations through the Node service SDK: add, get, list, update, remove, applied", async () => {
  const deviceId = "node-configured";
  await registry.create({ deviceId, status: "enabled" });
  try {
    await registry.updateTwin(deviceId, { tags: { fleet: "node-cfg" } }, "*");
    const id = "node-cfg-interval";
    await registry.addConfiguration({
      id,
      content: { deviceContent: { "properties.desired.interval": 42 } },
      targetCondition: "tags.fleet = 'node-cfg'",
      priority: 3,
      labels: { owner: "node" },
    });
    const { responseBody: got } = await registry.getConfiguration(id);
    assert.equal(got.priority, 3);
    assert.equal(got.labels.owner, "node");
    const { responseBody: all } = await registry.getConfigurations();
    assert.ok(all.some((c) => c.id === id));
    await eventually(async () => (await registry.getTwin(deviceId)).responseBody.properties.desired.interval === 42, "the content applied");

    got.content = { deviceContent: { "properties.desired.interval": 43 } };
    await registry.updateConfiguration(got, true);
    await eventually(async () => (await registry.getTwin(deviceId)).responseBody.properties.desired.interval === 43, "the new revision applied");
    const { responseBody: metrics } = await registry.getConfiguration(id);
    assert.deepEqual(metrics.systemMetrics.results, { targetedCount: 1, appliedCount: 1 });

    await registry.removeConfiguration(id);
    await assert.rejects(registry.getConfiguration(id));
  } finally {
    await registry.delete(deviceId).catch(() => {});
  }
});

// Cloud-to-device from the service SDK's own `send` (AMQP over TLS on 5671, azure-iothub's
// default transport) to a device on MQTT, with delivery feedback on its feedback receiver, and
// a message that expires before its device connects.
test("the service SDK's send over AMQP, with delivery feedback and expiry", async () => {
  const deviceId = "node-c2d-amqp";
  await registry.create({ deviceId, status: "enabled" });
  const { responseBody: device } = await registry.get(deviceId);
  const key = device.authentication.symmetricKey.primaryKey;
  const client = DeviceClient.fromConnectionString(`HostName=localhost;DeviceId=${deviceId};SharedAccessKey=${key}`, Mqtt);
  const amqpService = ServiceClient.fromConnectionString(OWNER);
  try {
    await client.open();
    const received = [];
    client.on("message", (m) => {
      received.push(m);
      client.complete(m, () => {});
    });
    await sleep(500);
    const feedback = await feedbackRecords(amqpService);
    const message = new Message(JSON.stringify({ command: "blink" }));
    message.messageId = "node-amqp-1";
    message.ack = "full";
    message.properties.add("urgency", "high");
    await amqpService.send(deviceId, message);
    await eventually(() => received.length === 1, "the message at the device");
    assert.equal(received[0].data.toString(), '{"command":"blink"}');
    assert.equal(received[0].messageId, "node-amqp-1");
    assert.equal(received[0].properties.getValue("urgency"), "high");
    await eventually(() => feedback.some((f) => f.originalMessageId === "node-amqp-1"), "its delivery feedback");
    const record = feedback.find((f) => f.originalMessageId === "node-amqp-1");
    assert.equal(record.deviceId, deviceId);
    assert.equal(record.statusCode, "Success");
    // To a device that does not exist: refused.
    await assert.rejects(amqpService.send("node-no-such-device", new Message("x")));

    // Expiry: a message for an offline device that expires before it connects is never
    // delivered, and its sender gets `Expired` feedback.
    const lateId = "node-c2d-expiring";
    await registry.create({ deviceId: lateId, status: "enabled" });
    const { responseBody: late } = await registry.get(lateId);
    const expiring = new Message("too late");
    expiring.messageId = "node-amqp-expiring";
    expiring.ack = "full";
    expiring.expiryTimeUtc = Date.now() + 1500;
    await amqpService.send(lateId, expiring);
    await sleep(2500);
    const lateKey = late.authentication.symmetricKey.primaryKey;
    const lateClient = DeviceClient.fromConnectionString(`HostName=localhost;DeviceId=${lateId};SharedAccessKey=${lateKey}`, Mqtt);
    const lateReceived = [];
    lateClient.on("message", (m) => {
      lateReceived.push(m);
      lateClient.complete(m, () => {});
    });
    await lateClient.open();
    const expired = (f) => f.originalMessageId === "node-amqp-expiring" && f.statusCode === "Expired";
    await eventually(() => feedback.some(expired), "its Expired feedback");
    await sleep(500);
    assert.equal(lateReceived.length, 0, "an expired message was delivered");
    await lateClient.close();
    await registry.delete(lateId);
  } finally {
    await amqpService.close().catch(() => {});
    await client.close();
    await registry.delete(deviceId);
  }
});

// A device on AMQP is one more transport to the same device session: the hub keeps one
// session per device whatever the transport (the newer connection wins), and disabling the
// device drops its AMQP links at once (the SDK's reconnection is then refused).
test("a device on Amqp shares the one-session rule with MQTT and is dropped when disabled", async () => {
  const deviceId = "node-amqp-lifecycle";
  const { cs } = await newDevice(deviceId);
  const mqtt = DeviceClient.fromConnectionString(cs, Mqtt);
  // Without retries, or the MQTT client would take the session straight back (the two would
  // take turns, as they would on IoT Hub).
  mqtt.setRetryPolicy(new NoRetry());
  const mqttDropped = new Promise((resolve) => mqtt.on("disconnect", resolve));
  const amqp = DeviceClient.fromConnectionString(cs, Amqp);
  try {
    await mqtt.open();
    mqtt.onDeviceMethod("who", (_request, response) => response.send(200, { transport: "mqtt" }));
    await sleep(300);
    const first = await service.invokeDeviceMethod(deviceId, { methodName: "who", payload: {} });
    assert.deepEqual(first.result.payload, { transport: "mqtt" });
    // The AMQP connection takes the session over.
    await amqp.open();
    amqp.onDeviceMethod("who", (_request, response) => response.send(200, { transport: "amqp" }));
    await sleep(500);
    await Promise.race([mqttDropped, sleep(10000).then(() => Promise.reject(new Error("the MQTT session was kept")))]);
    const second = await service.invokeDeviceMethod(deviceId, { methodName: "who", payload: {} });
    assert.deepEqual(second.result.payload, { transport: "amqp" });

    // Disabled: the AMQP links go at once, and the device is offline.
    const disconnected = new Promise((resolve) => amqp.on("disconnect", resolve));
    const { responseBody: current } = await registry.get(deviceId);
    await registry.update({ ...current, status: "disabled" });
    await Promise.race([disconnected, sleep(20000).then(() => Promise.reject(new Error("no disconnect after disabling")))]);
    await assert.rejects(service.invokeDeviceMethod(deviceId, { methodName: "who", payload: {}, responseTimeoutInSeconds: 5 }));
    const { responseBody: twin } = await registry.getTwin(deviceId);
    assert.equal(twin.connectionState, "Disconnected");
  } finally {
    await amqp.close().catch(() => {});
    await mqtt.close().catch(() => {});
    await registry.delete(deviceId).catch(() => {});
  }
});

// A device on AMQP can reject a message (IoT Hub's MQTT cannot): it leaves the queue and its
// sender's delivery feedback says Rejected.
test("a device on Amqp rejects a cloud-to-device message, and the sender hears it", async () => {
  const deviceId = "node-amqp-reject";
  const { cs } = await newDevice(deviceId);
  const client = DeviceClient.fromConnectionString(cs, Amqp);
  const amqpService = ServiceClient.fromConnectionString(OWNER);
  try {
    await client.open();
    const received = [];
    client.on("message", (m) => {
      received.push(m.messageId);
      client.reject(m, () => {});
    });
    await sleep(500);
    const feedback = await feedbackRecords(amqpService);
    const message = new Message("not for me");
    message.messageId = "node-reject-1";
    message.ack = "full";
    await amqpService.send(deviceId, message);
    await eventually(() => received.includes("node-reject-1"), "the message at the device");
    await eventually(() => feedback.some((f) => f.originalMessageId === "node-reject-1"), "its feedback");
    assert.equal(feedback.find((f) => f.originalMessageId === "node-reject-1").statusCode, "Rejected");
    const { responseBody: twin } = await registry.getTwin(deviceId);
    assert.equal(twin.cloudToDeviceMessageCount, 0, "a rejected message stayed queued");
  } finally {
    await amqpService.close().catch(() => {});
    await client.close().catch(() => {});
    await registry.delete(deviceId).catch(() => {});
  }
});

// Token lifetimes on AMQP: the SDK renews its token with a put-token on the same connection,
// and the device's links live on across the old token's end; a token that cannot be renewed
// ends them when it expires (and the SDK's reconnection with it is refused).
test("a device on Amqp: renewed tokens keep its links, an expired one ends them", async () => {
  const deviceId = "node-amqp-tokens";
  const { key, cs } = await newDevice(deviceId);
  const invoke = () => service.invokeDeviceMethod(deviceId, { methodName: "ping", payload: {}, responseTimeoutInSeconds: 5 });

  // Tokens valid 8 s, renewed 4 s before their end: three renewals in the 14 s below.
  const renewing = DeviceClient.fromAuthenticationProvider(SharedAccessKeyAuthenticationProvider.fromConnectionString(cs, 8, 4), Amqp);
  let dropped = null;
  renewing.on("disconnect", (e) => (dropped = e ?? "disconnect"));
  // The transport's own event (the client would hide a drop it recovers from by reconnecting):
  // the renewals must not cost the connection.
  renewing._transport.on("disconnect", (e) => (dropped = e ?? "transport disconnect"));
  try {
    await renewing.open();
    renewing.onDeviceMethod("ping", (_request, response) => response.send(200, { ok: true }));
    await sleep(14000);
    assert.equal(dropped, null, `the client was dropped: ${dropped}`);
    let answered = null;
    await eventually(async () => {
      answered = await invoke().catch(() => null);
      return answered !== null;
    }, "a method answered after the renewals");
    assert.equal(answered.result.status, 200);
  } finally {
    await renewing.close().catch(() => {});
  }

  // A signature valid for 5 s, which the client cannot renew.
  const sr = encodeURIComponent(`localhost/devices/${deviceId}`);
  const se = Math.floor(Date.now() / 1000) + 5;
  const sig = createHmac("sha256", Buffer.from(key, "base64")).update(`${sr}\n${se}`).digest("base64");
  const fixed = DeviceClient.fromSharedAccessSignature(`SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}`, Amqp);
  fixed.setRetryPolicy(new NoRetry());
  const disconnected = new Promise((resolve) => fixed.on("disconnect", resolve));
  try {
    await fixed.open();
    fixed.onDeviceMethod("ping", (_request, response) => response.send(200, { ok: true }));
    await sleep(500);
    assert.equal((await invoke()).result.status, 200);
    await Promise.race([disconnected, sleep(20000).then(() => Promise.reject(new Error("no disconnect after the token expired")))]);
    await assert.rejects(invoke());
  } finally {
    await fixed.close().catch(() => {});
    await registry.delete(deviceId).catch(() => {});
  }
});

// The Event Hub-compatible endpoint read by @azure/event-hubs 6 (rhea underneath), unmodified,
// on the connection string the run command prints: AMQP over TLS on 5671 (its default) and
// AMQP over WebSocket on 443 (`webSocketOptions`, the transport that works on Cloudflare too;
// Node 20 has no WebSocket of its own, so `ws` is passed as the SDK's docs say). A device on
// MQTT sends the article's telemetry with its `alert` property.
for (const [name, options] of [
  ["AMQP over TLS", {}],
  ["AMQP over WebSocket", { webSocketOptions: { webSocket: WebSocket } }],
]) {
  test(`@azure/event-hubs reads device telemetry (${name})`, async () => {
    const deviceId = `node-eventhub-${name.includes("WebSocket") ? "ws" : "tls"}`;
    await registry.create({ deviceId, status: "enabled" });
    const { responseBody: device } = await registry.get(deviceId);
    const key = device.authentication.symmetricKey.primaryKey;
    const client = DeviceClient.fromConnectionString(`HostName=localhost;DeviceId=${deviceId};SharedAccessKey=${key}`, Mqtt);
    const endpoint = `Endpoint=sb://${parts.HostName}/;SharedAccessKeyName=iothubowner;SharedAccessKey=${parts.SharedAccessKey};EntityPath=twinhub`;
    const consumer = new EventHubConsumerClient("$Default", endpoint, options);
    const events = [];
    const errors = [];
    let subscription;
    try {
      const partitionIds = await consumer.getPartitionIds();
      assert.ok(partitionIds.length >= 1, "no partitions");
      const properties = await consumer.getEventHubProperties();
      assert.equal(properties.name, "twinhub");
      await client.open();
      const message = new Message(JSON.stringify({ temperature: 31.5, humidity: 40 }));
      message.properties.add("alert", "high_temperature");
      await client.sendEvent(message);
      subscription = consumer.subscribe(
        {
          processEvents: async (batch) => {
            events.push(...batch.filter((e) => e.systemProperties["iothub-connection-device-id"] === deviceId));
          },
          processError: async (e) => {
            errors.push(e);
          },
        },
        { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 },
      );
      await eventually(() => events.length >= 1, "the event at the consumer", 20000).catch((e) => {
        throw new Error(`${e.message}; consumer errors: ${errors.map((x) => x.stack ?? String(x)).join("; ")}`);
      });
      const [event] = events;
      assert.deepEqual(event.body, { temperature: 31.5, humidity: 40 });
      assert.equal(event.properties.alert, "high_temperature");
      assert.ok(event.enqueuedTimeUtc instanceof Date);
      assert.ok(Math.abs(event.enqueuedTimeUtc.getTime() - Date.now()) < 60000, "enqueued time far off");
      assert.equal(typeof event.sequenceNumber, "number");
      assert.equal(errors.length, 0, `consumer errors: ${errors.map(String).join("; ")}`);
      // A wrong key is refused at the first request.
      const wrong = new EventHubConsumerClient("$Default", endpoint.replace(parts.SharedAccessKey, Buffer.alloc(32).toString("base64")), {
        ...options,
        retryOptions: { maxRetries: 0 },
      });
      await assert.rejects(wrong.getPartitionIds(), (e) => /unauthori|401|token/i.test(`${e.code} ${e.message}`));
      await wrong.close();
    } finally {
      await subscription?.close();
      await consumer.close();
      await client.close();
      await registry.delete(deviceId);
    }
  });
}

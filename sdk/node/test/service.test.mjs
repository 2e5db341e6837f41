// The SDK against the real service, started once for this file (see helpers/service.mjs).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import {
  APIConnectionError,
  APITimeoutError,
  AuthenticationError,
  BadRequestError,
  BatcherClosedError,
  NotFoundError,
  PermissionDeniedError,
  QueueFullError,
  RateLimitError,
  ServerError,
  StripeMeterError,
  createClient,
} from "@stripemeter/sdk-node";

import { Service, eventually } from "./helpers/service.mjs";

const vectors = JSON.parse(readFileSync(new URL("../../vectors/content-keys.json", import.meta.url), "utf8"));

let service;
let client;

before(async () => {
  service = await Service.start();
  client = createClient({ apiUrl: service.apiUrl, apiKey: service.key });
});

after(async () => {
  await service?.stop();
});

/** A customer of its own for each test: counters and listings see only that test's events. */
function customer() {
  return `cus_${randomUUID().slice(0, 8)}`;
}

function recent(secondsAgo = 0) {
  return new Date(Date.now() - secondsAgo * 1000);
}

/** The customer's api_calls counter once the projection has caught up with `count` events. */
async function counterOnce(customerRef, count) {
  return eventually(async () => {
    const usage = await client.getUsage(customerRef, { metric: "api_calls" });
    const counter = usage.counters[0];
    return counter !== undefined && counter.count === count ? counter : undefined;
  });
}

async function allEvents(customerRef) {
  const events = [];
  for await (const event of client.listEvents({ customerRef, pageSize: 1000 })) events.push(event);
  return events;
}

describe("track", () => {
  test("the same event twice counts once: accepted, then duplicate, under the content key", async () => {
    const cus = customer();
    const event = { metric: "api_calls", customerRef: cus, quantity: "2.50", ts: recent(5) };
    const first = await client.track(event);
    const again = await client.track(event);
    assert.equal(first.status, "accepted");
    assert.equal(again.status, "duplicate");
    assert.match(first.idempotencyKey, /^content:[0-9a-f]{64}$/);
    assert.equal(again.idempotencyKey, first.idempotencyKey);
    const counter = await counterOnce(cus, 1);
    assert.equal(counter.sum, "2.5");
  });

  test("a caller's key: the same content again is a duplicate, other content a conflict", async () => {
    const cus = customer();
    const key = `order-${randomUUID()}`;
    const ts = recent(5);
    const first = await client.track({ metric: "api_calls", customerRef: cus, quantity: 1, ts, idempotencyKey: key });
    const same = await client.track({ metric: "api_calls", customerRef: cus, quantity: 1, ts, idempotencyKey: key });
    const other = await client.track({ metric: "api_calls", customerRef: cus, quantity: 2, ts, idempotencyKey: key });
    assert.deepEqual([first.status, same.status, other.status], ["accepted", "duplicate", "conflict"]);
    assert.equal(first.idempotencyKey, key);
    assert.equal(other.field, "idempotencyKey");
  });

  test("a batch with bad events: each refuses only itself, with its field and reason", async () => {
    const cus = customer();
    const ts = recent(5);
    const answer = await client.trackBatch([
      { metric: "api_calls", customerRef: cus, quantity: 1, ts },
      { metric: "no_such_metric", customerRef: cus, quantity: 1, ts },
      { metric: "api_calls", customerRef: cus, quantity: 1e15, ts }, // refused by the SDK, not sent
      { metric: "api_calls", customerRef: cus, quantity: 1, ts: new Date(Date.now() + 3_600_000) },
      { metric: "api_calls", customerRef: cus, quantity: 3, ts },
    ]);
    assert.deepEqual(
      answer.results.map((r) => [r.index, r.status, r.field]),
      [
        [0, "accepted", undefined],
        [1, "error", "metric"],
        [2, "error", "quantity"],
        [3, "error", "ts"],
        [4, "accepted", undefined],
      ],
    );
    assert.equal(answer.results[1].reason, "metric 'no_such_metric' is not declared");
    assert.equal(answer.results[2].reason, "must be smaller than 10^15 in magnitude");
    assert.equal(answer.results[3].reason, "is more than 5 minutes in the future");
    assert.deepEqual([answer.accepted, answer.duplicates, answer.conflicts, answer.errors], [2, 0, 0, 3]);
    assert.equal((await counterOnce(cus, 2)).sum, "4");
  });

  test("a batch past the server's 1,000 events goes in several requests, every event once", async () => {
    const cus = customer();
    const ts = recent(5);
    const events = Array.from({ length: 2345 }, (_, i) => ({
      metric: "api_calls",
      customerRef: cus,
      quantity: 1,
      ts,
      meta: { i },
    }));
    const answer = await client.trackBatch(events);
    assert.equal(answer.accepted, 2345);
    assert.deepEqual(answer.results.map((r) => r.index), events.map((_, i) => i));
    assert.equal((await counterOnce(cus, 2345)).sum, "2345");
  });
});

describe("CloudEvents", () => {
  test("sent as they are or mapped from usage events: counted once, a resend all duplicates", async () => {
    const cus = customer();
    const time = recent(5).toISOString();
    const given = {
      specversion: "1.0",
      id: `ce-${randomUUID()}`,
      source: "/billing/tests",
      type: "api_calls",
      subject: cus,
      time,
      data: { quantity: 3, meta: { region: "eu" } },
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    };
    const mapped = { metric: "api_calls", customerRef: cus, quantity: "1.5", ts: recent(4) };
    const first = await client.sendCloudEvents([given, mapped]);
    assert.deepEqual(first.results.map((r) => r.status), ["accepted", "accepted"]);
    assert.equal(first.results[0].idempotencyKey, given.id);
    assert.match(first.results[1].idempotencyKey, /^content:[0-9a-f]{64}$/);
    const again = await client.sendCloudEvents([given]);
    assert.equal(again.duplicates, 1);
    // The same key sent as a JSON event is the same event.
    const asJson = await client.track({ metric: "api_calls", customerRef: cus, quantity: 3, ts: time, meta: { region: "eu" }, idempotencyKey: given.id });
    assert.equal(asJson.status, "duplicate");
    const counter = await counterOnce(cus, 2);
    assert.equal(counter.sum, "4.5");
  });

  test("a CloudEvent without what a retry needs is refused before sending; the server names attributes", async () => {
    const base = { specversion: "1.0", id: "x", source: "/s", type: "api_calls", subject: customer(), time: recent().toISOString(), data: { quantity: 1 } };
    await assert.rejects(client.sendCloudEvents([{ ...base, id: "" }]), (error) => error.field === "id" && error.index === 0);
    await assert.rejects(client.sendCloudEvents([{ ...base, specversion: "0.3" }]), (error) => error.field === "specversion");
    const answer = await client.sendCloudEvents([{ ...base, id: `ce-${randomUUID()}`, data: { quantity: "lots" } }]);
    assert.equal(answer.results[0].status, "error");
    assert.equal(answer.results[0].field, "data.quantity");
  });
});

describe("reads", () => {
  test("getUsage answers what was sent", async () => {
    const cus = customer();
    const quantities = [1, "0.25", 2.5, "1e2", 0.000001];
    await client.trackBatch(quantities.map((quantity, i) => ({ metric: "api_calls", customerRef: cus, quantity, ts: recent(i + 1) })));
    const counter = await counterOnce(cus, 5);
    assert.deepEqual(
      [counter.metric, counter.customerRef, counter.aggregation, counter.value, counter.sum, counter.count],
      ["api_calls", cus, "sum", "103.750001", "103.750001", 5],
    );
    const usage = await client.getUsage(cus);
    assert.equal(usage.customerRef, cus);
    assert.match(usage.period, /^\d{4}-\d{2}$/);
    assert.deepEqual(usage.notBilled, []);
  });

  test("listEvents pages through more than one page, in order, each event once", async () => {
    const cus = customer();
    const ts = recent(5);
    const sent = await client.trackBatch(
      Array.from({ length: 25 }, (_, i) => ({ metric: "api_calls", customerRef: cus, quantity: i + 1, ts, idempotencyKey: `${cus}-${i}` })),
    );
    assert.equal(sent.accepted, 25);
    let requests = 0;
    const counting = createClient({
      apiUrl: service.apiUrl,
      apiKey: service.key,
      fetch: (url, init) => {
        requests += 1;
        return fetch(url, init);
      },
    });
    const events = await eventually(async () => {
      const found = [];
      requests = 0;
      for await (const event of counting.listEvents({ customerRef: cus, pageSize: 10 })) found.push(event);
      return found.length === 25 ? found : undefined;
    });
    assert.equal(requests, 3);
    assert.deepEqual(events.map((e) => e.idempotencyKey), Array.from({ length: 25 }, (_, i) => `${cus}-${i}`));
    assert.deepEqual(events.map((e) => e.quantity), Array.from({ length: 25 }, (_, i) => String(i + 1)));
    assert.equal(events[0].metric, "api_calls");
    assert.equal(events[0].status, "counted");
  });

  test("getProjection, the audit and the reconciliation reads reach their routes", async () => {
    const cus = customer();
    await client.track({ metric: "api_calls", customerRef: cus, quantity: 4, ts: recent(5) });
    await counterOnce(cus, 1);
    const projection = await client.getProjection(cus);
    assert.equal(projection.customerRef, cus);
    assert.deepEqual(projection.lines, []);
    assert.equal(projection.total, null);
    assert.equal(typeof projection.freshness.asOf, "string");
    const audit = await client.getInvoiceAudit(cus, "api_calls");
    assert.equal(audit.counter.sum, "4");
    assert.equal(audit.unpushedEvents.length, 1);
    await assert.rejects(client.getReconciliation("2026-11"), NotFoundError);
    await assert.rejects(client.getReconciliationCsv("2026-11"), NotFoundError);
    // Nothing of this tenant is mapped to Stripe: a run has no period to report on.
    assert.deepEqual(await client.runReconciliation({ period: new Date().toISOString().slice(0, 7) }), []);
    await assert.rejects(client.runReconciliation({ period: "2026-13" }), (e) => e instanceof BadRequestError && e.field === "period");
    const adjustments = [];
    for await (const adjustment of client.listAdjustments({ status: "pending" })) adjustments.push(adjustment);
    assert.ok(Array.isArray(adjustments));
  });
});

test("createWidgetToken mints a token for one customer that reads only its usage", async () => {
  const cus = customer();
  await client.track({ metric: "api_calls", customerRef: cus, quantity: 7, ts: recent(5) });
  const minted = await client.createWidgetToken(cus, { lifetimeSeconds: 60 });
  assert.equal(minted.customerRef, cus);
  assert.match(minted.token, /^smw_/);
  await assert.rejects(client.createWidgetToken(cus, { lifetimeSeconds: 0 }), (e) => e instanceof BadRequestError && e.field === "lifetimeSeconds");
  const usage = await eventually(async () => {
    const answer = await fetch(`${service.apiUrl}/v1/widget/usage`, { headers: { authorization: `Bearer ${minted.token}` } });
    const body = await answer.json();
    return answer.status === 200 && body.metrics.length > 0 ? body : undefined;
  });
  assert.equal(usage.customerRef, cus);
  // The token is no API key.
  const asKey = createClient({ apiUrl: service.apiUrl, apiKey: minted.token, maxRetries: 0 });
  await assert.rejects(asKey.getUsage(cus), AuthenticationError);
});

describe("errors", () => {
  test("a value breaking a rule is a BadRequestError naming the field and the reason", async () => {
    const error = await client.getUsage(customer(), { period: "2026-13" }).catch((e) => e);
    assert.ok(error instanceof BadRequestError, String(error));
    assert.equal(error.status, 422);
    assert.equal(error.field, "period");
    assert.match(error.reason, /month/);
    assert.equal(error.attempts, 1);
    const cursor = await client.listEventsPage({ cursor: "bogus" }).catch((e) => e);
    assert.ok(cursor instanceof BadRequestError);
    assert.deepEqual([cursor.field, cursor.reason], ["cursor", "is not a cursor this API returned"]);
  });

  test("an unknown key is an AuthenticationError, a key without the scope a PermissionDeniedError", async () => {
    const stranger = createClient({ apiUrl: service.apiUrl, apiKey: "sm_not_a_key" });
    await assert.rejects(stranger.getUsage("cus_1"), (e) => e instanceof AuthenticationError && e.status === 401);
    await assert.rejects(stranger.track({ metric: "api_calls", customerRef: "c", quantity: 1 }), AuthenticationError);
    const ingestOnly = createClient({ apiUrl: service.apiUrl, apiKey: service.ingestOnlyKey });
    await assert.rejects(ingestOnly.getUsage("cus_1"), (e) => e instanceof PermissionDeniedError && e.status === 403);
  });

  test("a port nobody listens on: retried, then a APIConnectionError", async () => {
    const retries = [];
    const nowhere = createClient({
      apiUrl: "http://127.0.0.1:9",
      apiKey: "k",
      maxRetries: 2,
      retryInitialDelayMs: 10,
      onRetry: (info) => retries.push(info),
    });
    const error = await nowhere.getUsage("c").catch((e) => e);
    assert.ok(error instanceof APIConnectionError, String(error));
    assert.equal(error.attempts, 3);
    assert.deepEqual(retries.map((r) => r.attempt), [1, 2]);
  });
});

test("an onRetry that throws does not cut the retries short", async () => {
  const nowhere = createClient({
    apiUrl: "http://127.0.0.1:9",
    apiKey: "k",
    maxRetries: 2,
    retryInitialDelayMs: 1,
    onRetry: () => {
      throw new Error("the metrics sink is down");
    },
  });
  const error = await nowhere.getUsage("c").catch((e) => e);
  assert.ok(error instanceof APIConnectionError, String(error));
  assert.equal(error.attempts, 3);
});

/** A TCP server that accepts connections and never answers: a service that hangs. */
async function silentServer() {
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

test("no answer within timeoutMs is a APITimeoutError after the retries", async () => {
  const silent = await silentServer();
  try {
    const hanging = createClient({ apiUrl: silent.url, apiKey: "k", timeoutMs: 100, maxRetries: 1, retryInitialDelayMs: 1 });
    const error = await hanging.getUsage("c").catch((e) => e);
    assert.ok(error instanceof APITimeoutError, String(error));
    assert.equal(error.attempts, 2);
  } finally {
    await silent.close();
  }
});

/**
 * A proxy in front of the real service that answers the first requests itself
 * with the given statuses (429 with Retry-After, 503), then forwards.
 */
async function faultyProxy(faults) {
  let seen = 0;
  const server = createHttpServer(async (request, response) => {
    const fault = faults[seen++];
    if (fault !== undefined) {
      response.writeHead(fault.status, { "content-type": "application/problem+json", ...fault.headers });
      response.end(JSON.stringify({ type: "about:blank", title: "Injected", status: fault.status, detail: "injected by the test proxy" }));
      return;
    }
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const upstream = await fetch(`${service.apiUrl}${request.url}`, {
      method: request.method,
      headers: { authorization: request.headers.authorization, "content-type": "application/json" },
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    response.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") });
    response.end(Buffer.from(await upstream.arrayBuffer()));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests: () => seen,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

test("429 waits as Retry-After asks, 5xx backs off; then the real answer", async () => {
  const proxy = await faultyProxy([{ status: 429, headers: { "retry-after": "1" } }, { status: 503 }, { status: 500 }]);
  try {
    const retries = [];
    const cus = customer();
    const viaProxy = createClient({ apiUrl: proxy.url, apiKey: service.key, retryInitialDelayMs: 50, onRetry: (i) => retries.push(i) });
    const started = Date.now();
    const result = await viaProxy.track({ metric: "api_calls", customerRef: cus, quantity: 7, ts: recent(5) });
    assert.equal(result.status, "accepted");
    assert.ok(Date.now() - started >= 1000, "waited for Retry-After");
    assert.deepEqual(retries.map((r) => [r.attempt, r.error.constructor.name]), [[1, "RateLimitError"], [2, "ServerError"], [3, "ServerError"]]);
    assert.equal(retries[0].delayMs, 1000);
    assert.ok(retries[1].delayMs <= 100 && retries[2].delayMs <= 200, "full jitter under the doubling ceiling");
    assert.equal(proxy.requests(), 4);
    assert.equal((await counterOnce(cus, 1)).sum, "7");
  } finally {
    await proxy.close();
  }
});

test("bounded attempts: the last 429 or 5xx is thrown, typed", async () => {
  const proxy = await faultyProxy([
    { status: 429, headers: { "retry-after": "0" } }, { status: 429, headers: { "retry-after": "0" } },
    { status: 502 }, { status: 502 },
  ]);
  try {
    const viaProxy = createClient({ apiUrl: proxy.url, apiKey: service.key, maxRetries: 1, retryInitialDelayMs: 1 });
    await assert.rejects(viaProxy.getUsage("c"), (e) => e instanceof RateLimitError && e.attempts === 2 && e.retryAfterMs === 0);
    await assert.rejects(viaProxy.getUsage("c"), (e) => e instanceof ServerError && e.status === 502 && e.attempts === 2);
  } finally {
    await proxy.close();
  }
});

test("the vectors' events sent without a key: the server derives the vectors' keys", async () => {
  // Every vector of a declared metric, at a time the service takes (not the one in 2028).
  const sendable = vectors.vectors.filter((v) => !v.event.ts.startsWith("2028"));
  assert.ok(sendable.length >= 15);
  const prepared = client.prepare(sendable.map((v) => v.event));
  for (const event of prepared) assert.equal("idempotencyKey" in event.wire, false);
  const results = await client.sendPrepared(prepared);
  results.forEach((result, i) => {
    assert.ok(["accepted", "duplicate"].includes(result.status), JSON.stringify(result));
    assert.equal(result.idempotencyKey, sendable[i].key, sendable[i].name);
  });
  // The stored events hold the same keys (once the events view has caught up).
  const stored = await eventually(async () => {
    const keys = new Set();
    for await (const event of client.listEvents({ since: "2026-01-15T00:00:00Z", until: "2026-01-17T00:00:00Z" })) {
      keys.add(event.idempotencyKey);
    }
    return sendable.every((v) => keys.has(v.key)) ? keys : undefined;
  });
  for (const vector of sendable) assert.ok(stored.has(vector.key), vector.name);
});

test("the service killed and restarted while a batch retries: every event counted once", async (t) => {
  const cus = customer();
  const ts = recent(5);
  const events = Array.from({ length: 3000 }, (_, i) => ({ metric: "api_calls", customerRef: cus, quantity: 1, ts, meta: { i } }));
  const retries = [];
  let requests = 0;
  let killed;
  let restarted;
  const patient = createClient({
    apiUrl: service.apiUrl,
    apiKey: service.key,
    maxRetries: 50,
    retryInitialDelayMs: 100,
    retryMaxDelayMs: 500,
    // The real fetch; the service is killed while the second of three requests is on its way.
    fetch: (url, init) => {
      requests += 1;
      const answer = fetch(url, init);
      if (requests === 2) killed = new Promise((resolve) => setTimeout(resolve, 30)).then(() => service.kill());
      return answer;
    },
    onRetry: (info) => {
      retries.push(info);
      // Start the service again once it is gone and the client has seen it.
      if (killed !== undefined) restarted ??= killed.then(() => service.launch());
    },
  });
  const answer = await patient.trackBatch(events);
  await restarted;
  assert.ok(retries.length >= 1, "the client retried");
  assert.ok(retries.every((r) => r.error instanceof APIConnectionError), retries.map((r) => String(r.error)).join("\n"));
  assert.equal(answer.errors + answer.conflicts, 0);
  assert.equal(answer.accepted + answer.duplicates, 3000);
  // The first request was answered before the kill.
  assert.deepEqual(new Set(answer.results.slice(0, 1000).map((r) => r.status)), new Set(["accepted"]));
  const counter = await counterOnce(cus, 3000);
  assert.equal(counter.sum, "3000");
  const stored = await allEvents(cus);
  assert.equal(stored.length, 3000);
  assert.equal(new Set(stored.map((e) => e.meta.i)).size, 3000);
  t.diagnostic(`${retries.length} retries; ${answer.duplicates} events were committed before the kill cut their answer`);
  // The same events again (their time fixed by the caller): the same keys, duplicates only.
  const again = await client.trackBatch(events);
  assert.equal(again.duplicates, 3000);
});

describe("batcher", () => {
  function collector() {
    const results = [];
    const failures = [];
    let wake = () => {};
    return {
      results,
      failures,
      onResult: (r) => {
        results.push(r);
        wake();
      },
      onError: (f) => failures.push(f),
      async until(count, timeoutMs = 10_000) {
        const deadline = Date.now() + timeoutMs;
        while (results.length < count) {
          if (Date.now() > deadline) throw new Error(`${results.length} of ${count} results`);
          await new Promise((resolve) => {
            wake = resolve;
            setTimeout(resolve, 50);
          });
        }
      },
    };
  }

  const event = (cus, i) => ({ metric: "api_calls", customerRef: cus, quantity: 1, ts: recent(1), meta: { i } });

  test("a full batch goes out at once, without flush() or the timer", async () => {
    const cus = customer();
    const seen = collector();
    const batcher = client.createBatcher({ maxBatchSize: 5, flushIntervalMs: 3_600_000, onResult: seen.onResult, onError: seen.onError });
    for (let i = 0; i < 4; i++) await batcher.add(event(cus, i));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(seen.results.length, 0, "four of five: nothing sent yet");
    await batcher.add(event(cus, 4));
    await seen.until(5);
    assert.deepEqual(seen.results.map((r) => r.result.status), Array(5).fill("accepted"));
    assert.deepEqual(seen.failures, []);
    await batcher.close();
  });

  test("the interval sends whatever is queued", async () => {
    const cus = customer();
    const seen = collector();
    const batcher = client.createBatcher({ maxBatchSize: 100, flushIntervalMs: 200, onResult: seen.onResult, onError: seen.onError });
    const started = Date.now();
    for (let i = 0; i < 3; i++) await batcher.add(event(cus, i));
    await seen.until(3);
    assert.ok(Date.now() - started >= 100, "sent by the timer, not at once");
    await batcher.close();
    assert.equal((await counterOnce(cus, 3)).sum, "3");
  });

  test("flush() resolves once every event added before it has an answer; keys are known at add()", async () => {
    const cus = customer();
    const seen = collector();
    const batcher = client.createBatcher({ maxBatchSize: 4, flushIntervalMs: 3_600_000, onResult: seen.onResult, onError: seen.onError });
    const added = [];
    for (let i = 0; i < 10; i++) added.push(await batcher.add(event(cus, i)));
    await batcher.flush();
    assert.equal(seen.results.length, 10);
    assert.equal(batcher.pending, 0);
    assert.deepEqual(seen.results.map((r) => r.result.idempotencyKey), added.map((p) => p.idempotencyKey));
    await batcher.flush(); // nothing pending: resolves at once
    await batcher.close();
  });

  test("close() sends what is queued; add() afterwards is refused", async () => {
    const cus = customer();
    const seen = collector();
    const batcher = client.createBatcher({ maxBatchSize: 100, flushIntervalMs: 3_600_000, onResult: seen.onResult, onError: seen.onError });
    for (let i = 0; i < 7; i++) await batcher.add(event(cus, i));
    await batcher.close();
    assert.equal(seen.results.length, 7);
    await assert.rejects(batcher.add(event(cus, 8)), BatcherClosedError);
    assert.equal((await counterOnce(cus, 7)).sum, "7");
  });

  test("per-event failures reach onError, never silently", async () => {
    const cus = customer();
    const seen = collector();
    const batcher = client.createBatcher({ flushIntervalMs: 3_600_000, onResult: seen.onResult, onError: seen.onError });
    await batcher.add(event(cus, 0));
    await batcher.add({ metric: "no_such_metric", customerRef: cus, quantity: 1 });
    await assert.rejects(batcher.add({ metric: "api_calls", customerRef: cus, quantity: "lots" }), (e) => e.field === "quantity");
    await batcher.close();
    assert.equal(seen.failures.length, 1);
    assert.equal(seen.failures[0].kind, "event");
    assert.deepEqual([seen.failures[0].result.field, seen.failures[0].result.status], ["metric", "error"]);
  });

  test("a full queue: 'throw' refuses at once, 'block' waits for room (or times out)", async () => {
    const silent = await silentServer();
    try {
      const hanging = createClient({ apiUrl: silent.url, apiKey: "k", timeoutMs: 400, maxRetries: 0 });
      const cus = customer();
      const throwing = hanging.createBatcher({ maxBatchSize: 2, maxQueueSize: 2, whenFull: "throw", onError: () => {} });
      await throwing.add(event(cus, 0));
      await throwing.add(event(cus, 1)); // a full batch: in flight, unanswered
      await assert.rejects(throwing.add(event(cus, 2)), QueueFullError);
      await throwing.close();

      const failures = [];
      const blocking = hanging.createBatcher({ maxBatchSize: 2, maxQueueSize: 2, whenFull: "block", onError: (f) => failures.push(f) });
      await blocking.add(event(cus, 0));
      await blocking.add(event(cus, 1));
      const started = Date.now();
      const third = await blocking.add(event(cus, 2)); // room once the request fails (timeout, no retries)
      assert.ok(Date.now() - started >= 300, "add() waited for room");
      assert.equal(failures.length, 1);
      assert.equal(failures[0].kind, "request");
      assert.ok(failures[0].error instanceof APITimeoutError);
      // The failed events carry their keys: adding them again can only make duplicates.
      assert.equal(failures[0].events.length, 2);
      assert.match(third.idempotencyKey, /^content:/);
      await blocking.close();

      const timing = hanging.createBatcher({ maxBatchSize: 1, maxQueueSize: 1, blockTimeoutMs: 50, onError: () => {} });
      await timing.add(event(cus, 0));
      await assert.rejects(timing.add(event(cus, 1)), QueueFullError);
      await timing.close();
    } finally {
      await silent.close();
    }
  });

  test("a process that ends without close() sends what it queued first, and is not held open", async () => {
    const cus = customer();
    const script = fileURLToPath(new URL("./fixtures/exit-without-close.mjs", import.meta.url));
    const started = Date.now();
    const { stdout } = await promisify(execFile)(process.execPath, [script, service.apiUrl, service.key, cus], { timeout: 30_000 });
    assert.deepEqual(stdout.trim().split("\n"), ["accepted", "accepted", "accepted"]);
    assert.ok(Date.now() - started < 20_000, "the hour-long flush timer did not keep it alive");
    assert.equal((await counterOnce(cus, 3)).sum, "3");
  });

  test("async callbacks that reject neither stop the batcher nor crash the process", async () => {
    const cus = customer();
    const script = fileURLToPath(new URL("./fixtures/async-callbacks-reject.mjs", import.meta.url));
    const run = promisify(execFile)(process.execPath, [script, service.apiUrl, service.key, cus], { timeout: 30_000 });
    const { stdout, stderr } = await run.catch((error) => assert.fail(`the app died: ${error.stderr}`));
    assert.equal(stdout.trim(), "accepted,error,accepted");
    assert.match(stderr, /callback threw: Error: the results log is down/);
    assert.equal((await counterOnce(cus, 2)).sum, "2");
  });

  test("a blocked add() gets in as soon as the real service answers", async () => {
    const cus = customer();
    const seen = collector();
    const batcher = client.createBatcher({ maxBatchSize: 3, maxQueueSize: 3, flushIntervalMs: 3_600_000, onResult: seen.onResult, onError: seen.onError });
    for (let i = 0; i < 3; i++) await batcher.add(event(cus, i));
    await batcher.add(event(cus, 3)); // waits for the first three to be answered
    assert.ok(seen.results.length >= 3);
    await batcher.close();
    assert.equal(seen.results.length, 4);
    assert.equal((await counterOnce(cus, 4)).sum, "4");
  });
});

describe("events without ts", () => {
  test("each is an occurrence of its own: neither trackBatch nor the batcher merges two into one", async () => {
    const cus = customer();
    const event = { metric: "api_calls", customerRef: cus, quantity: 1 };
    const answer = await client.trackBatch([event, event, event]);
    assert.deepEqual(
      answer.results.map((r) => r.status),
      ["accepted", "accepted", "accepted"],
    );
    const statuses = [];
    const batcher = client.createBatcher({
      flushIntervalMs: 60_000,
      maxBatchSize: 1000,
      onResult: ({ result }) => statuses.push(result.status),
    });
    const keys = new Set();
    for (let i = 0; i < 200; i++) keys.add((await batcher.add(event)).idempotencyKey);
    await batcher.close();
    assert.equal(keys.size, 200);
    // Random keys, sent: two workers' clocks cannot merge two such events.
    for (const key of keys) assert.match(key, /^evt-[0-9a-f-]{36}$/);
    assert.deepEqual(new Set(statuses), new Set(["accepted"]));
    const counter = await counterOnce(cus, 203);
    assert.equal(counter.sum, "203");
  });
});

test("option values that are no usable numbers are refused when the client or batcher is made", () => {
  // maxRetries NaN retried forever (attempt >= NaN is never true); a timeout past
  // setTimeout's 2^31-1 ms (Infinity, say) fired after 1 ms: every attempt timed out.
  const base = { apiUrl: "http://127.0.0.1:9", apiKey: "k" };
  for (const bad of [
    { maxRetries: Number.NaN },
    { maxRetries: -1 },
    { maxRetries: 1.5 },
    { timeoutMs: Number.POSITIVE_INFINITY },
    { timeoutMs: 0 },
    { timeoutMs: 2 ** 31 },
    { retryInitialDelayMs: Number.NaN },
    { retryMaxDelayMs: -1 },
    { maxRetryAfterMs: Number.NaN },
  ]) {
    assert.throws(() => createClient({ ...base, ...bad }), StripeMeterError, JSON.stringify(bad));
  }
  const good = createClient(base);
  for (const bad of [
    { blockTimeoutMs: Number.POSITIVE_INFINITY },
    { blockTimeoutMs: Number.NaN },
    { blockTimeoutMs: -5 },
    { flushIntervalMs: 2 ** 31 },
  ]) {
    assert.throws(() => good.createBatcher(bad), StripeMeterError, JSON.stringify(bad));
  }
  // A batch larger than one request would be split, and reported whole if a later part failed.
  const small = createClient({ ...base, maxBatchEvents: 100 });
  assert.throws(() => small.createBatcher({ maxBatchSize: 101 }), /at most the client's maxBatchEvents \(100\)/);
  const fitted = small.createBatcher();
  fitted.close();
});

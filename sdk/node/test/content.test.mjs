// Content keys without a server: the shared vectors, and what the SDK refuses
// rather than send a value whose key it could not know.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  InvalidEventError,
  canonicalMeta,
  canonicalQuantity,
  canonicalTime,
  contentKey,
  prepareEvent,
} from "@stripemeter/sdk-node";

const vectors = JSON.parse(readFileSync(new URL("../../vectors/content-keys.json", import.meta.url), "utf8"));

test("the shared vectors file holds vectors", () => {
  assert.ok(vectors.vectors.length >= 20);
});

for (const vector of vectors.vectors) {
  test(`content key vector: ${vector.name}`, () => {
    // `event` is the wire text parsed, as a JavaScript caller would hold it.
    assert.deepEqual(JSON.parse(vector.wire), vector.event);
    const { canonical, key } = contentKey(vector.event);
    assert.equal(canonical, vector.canonical);
    assert.equal(key, vector.key);
  });
}

test("a prepared event without a key sends none: the server derives the same one", () => {
  const vector = vectors.vectors[0];
  const prepared = prepareEvent(vector.event, () => new Date());
  assert.equal(prepared.derived, true);
  assert.equal(prepared.idempotencyKey, vector.key);
  assert.equal("idempotencyKey" in prepared.wire, false);
  assert.equal(prepared.wire.ts, "2026-01-16T14:30:00.000000Z");
});

test("a caller's key is sent as given", () => {
  const prepared = prepareEvent({ ...vectors.vectors[0].event, idempotencyKey: "req-1" }, () => new Date());
  assert.deepEqual([prepared.derived, prepared.idempotencyKey, prepared.wire.idempotencyKey], [false, "req-1", "req-1"]);
});

test("an event without a time gets the time it was prepared at, once", () => {
  const at = new Date("2026-03-04T05:06:07.891Z");
  const prepared = prepareEvent({ metric: "m", customerRef: "c", quantity: 1 }, () => at);
  assert.equal(prepared.wire.ts, "2026-03-04T05:06:07.891000Z");
  // The time is the client's clock: the key is random and sent, never a content key.
  assert.match(prepared.idempotencyKey, /^evt-[0-9a-f-]{36}$/);
  assert.equal(prepared.wire.idempotencyKey, prepared.idempotencyKey);
  assert.equal(prepared.derived, false);
  const again = prepareEvent({ metric: "m", customerRef: "c", quantity: 1 }, () => at);
  assert.notEqual(again.idempotencyKey, prepared.idempotencyKey);
});

test("quantities print as the server normalises them", () => {
  const cases = [
    [100, "100"], ["12.500", "12.5"], [1.5e3, "1500"], [1e-6, "0.000001"], [-3.25, "-3.25"],
    [0, "0"], [-0, "0"], ["-0.000", "0"], ["0e-20", "0"], ["1E2", "100"], ["99.000000000001", "99.000000000001"],
    ["999999999999999", "999999999999999"], ["0.000000000001", "0.000000000001"], [1e-12, "0.000000000001"],
    ["123.4500e-2", "1.2345"], ["1.0e+14", "100000000000000"], [0.1, "0.1"],
  ];
  for (const [given, expected] of cases) assert.equal(canonicalQuantity(given), expected, String(given));
});

test("quantities past the server's limits are refused on the client, with its reason", () => {
  const cases = [
    [1e15, "must be smaller than 10^15 in magnitude"],
    ["1000000000000000", "must be smaller than 10^15 in magnitude"],
    ["1e999999999999", "must be smaller than 10^15 in magnitude"],
    ["0.0000000000001", "must have at most 12 decimal places"],
    [1e-13, "must have at most 12 decimal places"],
    ["1e-9999999999", "must have at most 12 decimal places"],
    [Number.NaN, "must be a finite number"],
    [Infinity, "must be a finite number"],
    ["Infinity", "must be a finite number"],
    [".5", "must be a number written as in JSON, e.g. 12 or 0.5"],
    ["+5", "must be a number written as in JSON, e.g. 12 or 0.5"],
    [" 5", "must be a number written as in JSON, e.g. 12 or 0.5"],
    ["05", "must be a number written as in JSON, e.g. 12 or 0.5"],
    [true, "must be a number or a string holding one"],
  ];
  for (const [given, reason] of cases) {
    assert.throws(
      () => canonicalQuantity(given),
      (error) => error instanceof InvalidEventError && error.field === "quantity" && error.reason === reason,
      String(given),
    );
  }
});

test("times are normalised to UTC microseconds; what is no time is refused", () => {
  assert.equal(canonicalTime("2026-01-16T15:30:00.1234567+01:00"), "2026-01-16T14:30:00.123456Z");
  assert.equal(canonicalTime("2026-01-16T14:30:00+01:60"), "2026-01-16T12:30:00.000000Z");
  assert.equal(canonicalTime(new Date(Date.UTC(2026, 0, 16, 14, 30, 0, 5))), "2026-01-16T14:30:00.005000Z");
  const refused = {
    "2026-01-16T14:30:00": "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-16T14:30:00Z",
    "2026-01-16T14:30:00.1234567891Z": "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-16T14:30:00Z",
    "2026-02-29T00:00:00Z": "is not a real date and time",
    "2026-01-16T24:00:00Z": "is not a real date and time",
    "2026-01-16T23:59:60Z": "is not a real date and time",
    "2026-01-16T14:30:00+24:00": "is not a real date and time",
    "0000-01-01T00:00:00Z": "is not a real date and time",
    "0001-01-01T00:30:00+01:00": "is outside years 0001 to 9999 once in UTC",
  };
  for (const [given, reason] of Object.entries(refused)) {
    assert.throws(() => canonicalTime(given), (e) => e.field === "ts" && e.reason === reason, given);
  }
  assert.throws(() => canonicalTime(new Date("nonsense")), (e) => e.reason === "is not a real date and time");
});

test("meta prints as Python's json.dumps of what the server decodes", () => {
  assert.equal(canonicalMeta(undefined), "{}");
  assert.equal(canonicalMeta(null), "{}");
  assert.equal(canonicalMeta({ gone: undefined }), "{}");
  assert.equal(canonicalMeta({ at: new Date(Date.UTC(2026, 0, 1)) }), '{"at":"2026-01-01T00:00:00.000Z"}');
  assert.equal(canonicalMeta({ n: 1e20, f: 1e16, g: 123456789012345.67, h: 1.5, z: 0.00001234, w: 1e21 }),
    // 1e16 prints as an integer literal in JSON: the server reads an int.
    '{"f":10000000000000000,"g":123456789012345.67,"h":1.5,"n":100000000000000000000,"w":1e+21,"z":1.234e-05}');
  assert.equal(canonicalMeta({ x: [Number.NaN, undefined] }), '{"x":[null,null]}');
  assert.equal(canonicalMeta({ "\u{1F600}": 1, "\uFB01": 2 }), '{"\uFB01":2,"\u{1F600}":1}');
  assert.equal(canonicalMeta({ s: "\u0000\u0008\u000c\u001b\u2028" }), '{"s":"\\u0000\\b\\f\\u001b\u2028"}');
  assert.throws(() => canonicalMeta([1]), (e) => e.field === "meta" && e.reason === "must be a JSON object");
});

test("text the server could not decode (a lone surrogate) is refused before sending", () => {
  const base = { metric: "api_calls", customerRef: "c", quantity: 1, ts: "2026-01-16T14:30:00Z" };
  for (const [field, event] of [
    ["customerRef", { ...base, customerRef: "c\uD800" }],
    ["meta", { ...base, meta: { k: "\uDC00x" } }],
    ["meta", { ...base, meta: { "\uD83D": 1 } }],
    ["idempotencyKey", { ...base, idempotencyKey: "k\uDFFF" }],
  ]) {
    assert.throws(() => prepareEvent(event, () => new Date()), (e) => e instanceof InvalidEventError && e.field === field);
  }
});

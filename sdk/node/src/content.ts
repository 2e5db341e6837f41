/**
 * An event's content as the server reads it, and the content key it derives.
 *
 * The server (domain/idempotency.py, domain/fields.py) gives an event sent
 * without a key the key `content:` + hex SHA-256 of its canonical form:
 * metric, customerRef, quantity, ts and meta, one per line. This module
 * computes the same text from what the SDK is about to send, so that a
 * caller knows each event's key before the first attempt, and sends values
 * whose canonical form it can compute exactly. What it cannot compute exactly
 * (a quantity past the server's limits, a time that is no time, text with a
 * lone surrogate, which the server cannot decode) it refuses before sending.
 *
 * Node's `node:crypto` hashes: the SDK runs on Node (18+), not in browsers.
 */

import { createHash, randomUUID } from "node:crypto";

import { InvalidEventError } from "./errors.js";

export type Quantity = number | string;
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type Meta = { [key: string]: unknown };

/** A usage event as the caller gives it. */
export interface UsageEvent {
  metric: string;
  customerRef: string;
  /** A JSON number, or a string holding one (`"12.50"`): below 10^15, at most 12 places. */
  quantity: Quantity;
  /** When it happened: a Date or an RFC 3339 string with an offset; default: now. */
  ts?: Date | string;
  meta?: Meta | null;
  /** Your own key; without one, the server derives the content key (see `contentKey`). */
  idempotencyKey?: string;
}

/** An event exactly as it goes on the wire. */
export interface WireEvent {
  metric: string;
  customerRef: string;
  quantity: Quantity;
  ts: string;
  meta?: { [key: string]: JsonValue };
  idempotencyKey?: string;
}

/** An event with its time fixed and its key chosen: every attempt sends the same. */
export interface PreparedEvent {
  wire: WireEvent;
  /** The key the server will answer with: the caller's, or the derived content key. */
  idempotencyKey: string;
  /** Whether the key is derived from the content (then it is not sent: the server derives it). */
  derived: boolean;
}

export interface ContentKey {
  canonical: string;
  key: string;
}

const MAX_QUANTITY_DIGITS = 15;
const MAX_QUANTITY_PLACES = 12;
const NUMBER = /^(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?$/;
const RFC3339 =
  /^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * A quantity as the server normalises it: plain notation, no trailing zeros, "0" for zero.
 * Refuses, with the server's reason, what the server would refuse.
 */
export function canonicalQuantity(quantity: Quantity): string {
  return parseQuantity(quantity);
}

function quantityText(quantity: unknown): string {
  if (typeof quantity === "number") {
    if (!Number.isFinite(quantity)) throw new InvalidEventError("quantity", "must be a finite number");
    return JSON.stringify(quantity);
  }
  if (typeof quantity === "string") return quantity;
  throw new InvalidEventError("quantity", "must be a number or a string holding one");
}

function parseQuantity(quantity: unknown): string {
  const text = quantityText(quantity);
  const match = NUMBER.exec(text);
  if (match === null) {
    const bare = text.replace(/^[+-]+|[+-]+$/g, "").toLowerCase();
    if (["nan", "snan", "inf", "infinity"].includes(bare)) {
      throw new InvalidEventError("quantity", "must be a finite number");
    }
    throw new InvalidEventError("quantity", "must be a number written as in JSON, e.g. 12 or 0.5");
  }
  const sign = match[1] ?? "";
  const whole = match[2] ?? "";
  const fraction = match[3] ?? "";
  const exponentText = match[4] ?? "0";
  const digits = (whole + fraction).replace(/^0+/, "");
  if (digits === "") return "0";
  let significant = digits.replace(/0+$/, "");
  if (exponentText.replace(/^[+-]/, "").replace(/^0+/, "").length > 9) {
    throw exponentText.startsWith("-") ? placesError() : magnitudeError();
  }
  // The value is significant × 10^scale.
  let scale = Number.parseInt(exponentText, 10) - fraction.length + (digits.length - significant.length);
  if (scale + significant.length > MAX_QUANTITY_DIGITS) throw magnitudeError();
  if (scale < -MAX_QUANTITY_PLACES) throw placesError();
  if (scale > 0) {
    significant += "0".repeat(scale);
    scale = 0;
  }
  const places = -scale;
  let plain: string;
  if (places === 0) plain = significant;
  else if (significant.length > places) {
    plain = `${significant.slice(0, significant.length - places)}.${significant.slice(-places)}`;
  } else plain = `0.${"0".repeat(places - significant.length)}${significant}`;
  return sign === "-" ? `-${plain}` : plain;
}

function magnitudeError(): InvalidEventError {
  return new InvalidEventError("quantity", `must be smaller than 10^${MAX_QUANTITY_DIGITS} in magnitude`);
}

function placesError(): InvalidEventError {
  return new InvalidEventError("quantity", `must have at most ${MAX_QUANTITY_PLACES} decimal places`);
}

/**
 * A time as the server keeps it, in UTC to the microsecond: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
 * A string's fraction past microseconds is cut, not rounded, as the server does.
 */
export function canonicalTime(ts: Date | string): string {
  if (ts instanceof Date) {
    const ms = ts.getTime();
    if (Number.isNaN(ms)) throw new InvalidEventError("ts", "is not a real date and time");
    return formatUtc(ms, ts.getUTCMilliseconds() * 1000);
  }
  if (typeof ts !== "string") {
    throw new InvalidEventError("ts", "must be a Date or an RFC 3339 string");
  }
  const match = RFC3339.exec(ts);
  if (match === null) {
    throw new InvalidEventError(
      "ts",
      "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-16T14:30:00Z",
    );
  }
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const micros = Number(((match[7] ?? "") + "000000").slice(0, 6));
  const offsetMinutes =
    match[8] !== undefined ? 0 : (match[9] === "-" ? -1 : 1) * (Number(match[10]) * 60 + Number(match[11]));
  const real =
    year >= 1 &&
    month >= 1 &&
    month <= 12 &&
    day >= 1 &&
    day <= daysIn(year, month) &&
    hour <= 23 &&
    minute <= 59 &&
    second <= 59 &&
    Math.abs(offsetMinutes) < 24 * 60;
  if (!real) throw new InvalidEventError("ts", "is not a real date and time");
  const local = new Date(0);
  local.setUTCFullYear(year, month - 1, day);
  local.setUTCHours(hour, minute, second, Math.floor(micros / 1000));
  return formatUtc(local.getTime() - offsetMinutes * 60_000, micros);
}

function daysIn(year: number, month: number): number {
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1] ?? 0;
}

function formatUtc(ms: number, micros: number): string {
  const at = new Date(ms);
  const year = at.getUTCFullYear();
  if (year < 1 || year > 9999) {
    throw new InvalidEventError("ts", "is outside years 0001 to 9999 once in UTC");
  }
  const two = (n: number): string => String(n).padStart(2, "0");
  return (
    `${String(year).padStart(4, "0")}-${two(at.getUTCMonth() + 1)}-${two(at.getUTCDate())}` +
    `T${two(at.getUTCHours())}:${two(at.getUTCMinutes())}:${two(at.getUTCSeconds())}` +
    `.${String(micros).padStart(6, "0")}Z`
  );
}

let lastDefaultMicros = 0;

/**
 * Now, for an event given without `ts`: in UTC to the microsecond, and
 * strictly later on each call in this process (by at least a microsecond).
 *
 * An event without `ts` is an occurrence of its own: its key is random
 * (see `prepareEvent`), and its time, ordered in this process, says when it
 * was made; `Date` has only milliseconds, so each default time is a later
 * microsecond (as the Python SDK's).
 */
export function defaultTime(): string {
  const micros = Math.max(Date.now() * 1000, lastDefaultMicros + 1);
  lastDefaultMicros = micros;
  const ms = Math.floor(micros / 1000);
  return formatUtc(ms, (ms % 1000) * 1000 + (micros % 1000));
}

/**
 * `meta` as Python's `json.dumps(meta, sort_keys=True, separators=(",", ":"),
 * ensure_ascii=False)` prints what the server decodes from the SDK's JSON.
 */
export function canonicalMeta(meta: Meta | null | undefined): string {
  const wire = wireMeta(meta);
  return wire === undefined || Object.keys(wire).length === 0 ? "{}" : pythonJson(wire);
}

/** `meta` as it goes on the wire: what JSON.stringify makes of it (Dates become strings, …). */
function wireMeta(meta: unknown): { [key: string]: JsonValue } | undefined {
  if (meta === undefined || meta === null) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(JSON.stringify(meta));
  } catch (error) {
    throw new InvalidEventError("meta", `cannot be sent as JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new InvalidEventError("meta", "must be a JSON object");
  }
  return parsed as { [key: string]: JsonValue };
}

function pythonJson(value: JsonValue): string {
  if (value === null) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (typeof value === "number") return pythonNumber(value);
  if (typeof value === "string") return pythonString(value);
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(",")}]`;
  const keys = Object.keys(value).sort(byCodePoint);
  return `{${keys.map((k) => `${pythonString(k)}:${pythonJson(value[k] as JsonValue)}`).join(",")}}`;
}

/**
 * A JSON number as Python prints what it decoded: an integer literal stays an
 * int (its digits), anything else is a float printed by `repr`.
 */
function pythonNumber(value: number): string {
  const text = JSON.stringify(value);
  if (/^-?[0-9]+$/.test(text)) return text;
  // The shortest digits that read back as this double, as repr chooses them.
  const [mantissa = "", exponentText = "0"] = Math.abs(value).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const exponent = Number(exponentText);
  const sign = value < 0 ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      const whole = digits.padEnd(exponent + 1, "0").slice(0, exponent + 1);
      const fraction = digits.slice(exponent + 1) || "0";
      return `${sign}${whole}.${fraction}`;
    }
    return `${sign}0.${"0".repeat(-exponent - 1)}${digits}`;
  }
  const head = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  const power = String(Math.abs(exponent)).padStart(2, "0");
  return `${sign}${head}e${exponent < 0 ? "-" : "+"}${power}`;
}

const ESCAPES: { [char: string]: string } = {
  '"': '\\"',
  "\\": "\\\\",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\b": "\\b",
  "\f": "\\f",
};

const TO_ESCAPE = /[\u0000-\u001f"\\]/g;

function pythonString(text: string): string {
  const escaped = text.replace(
    TO_ESCAPE,
    (char) => ESCAPES[char] ?? `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return `"${escaped}"`;
}

/** Python orders text by code point; JavaScript's `<` by UTF-16 unit (astral before U+E000). */
function byCodePoint(a: string, b: string): number {
  const shared = Math.min(a.length, b.length);
  for (let i = 0; i < shared; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

function codePointRank(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000; // astral: after all of the BMP
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

function checkText(field: string, value: unknown): string {
  if (typeof value !== "string") throw new InvalidEventError(field, "must be a string");
  if (LONE_SURROGATE.test(value)) {
    throw new InvalidEventError(field, "must not contain a lone surrogate (not text)");
  }
  return value;
}

function checkMetaText(value: JsonValue): void {
  if (typeof value === "string") checkText("meta", value);
  else if (Array.isArray(value)) value.forEach(checkMetaText);
  else if (value !== null && typeof value === "object") {
    for (const [key, inner] of Object.entries(value)) {
      checkText("meta", key);
      checkMetaText(inner);
    }
  }
}

/** The canonical form the server hashes, and the content key it derives from it. */
export function contentKey(event: UsageEvent): ContentKey {
  const prepared = prepareEvent(event, defaultTime);
  const canonical = canonicalOf(prepared.wire);
  return { canonical, key: keyOf(canonical) };
}

function canonicalOf(wire: WireEvent): string {
  return [
    wire.metric,
    wire.customerRef,
    parseQuantity(wire.quantity),
    canonicalTime(wire.ts),
    wire.meta === undefined || Object.keys(wire.meta).length === 0 ? "{}" : pythonJson(wire.meta),
  ].join("\n");
}

function keyOf(canonical: string): string {
  return `content:${createHash("sha256").update(canonical, "utf8").digest("hex")}`;
}

/**
 * The event with its time fixed (`now()`, when it has none; by default each
 * call a later microsecond, see `defaultTime`) and its key chosen, once: a
 * retry sends exactly this again. The key: the caller's; else, when the
 * caller gave `ts`, the content key (computed, not sent: the server derives
 * it); else a random one (`evt-` + a UUID), sent. Without `ts` the time is
 * this machine's clock, which two processes can read alike: with a content
 * key, two identical events made in one microsecond by two workers would be
 * one event, and the second would never be counted.
 */
export function prepareEvent(event: UsageEvent, now: () => Date | string = defaultTime): PreparedEvent {
  if (typeof event !== "object" || event === null) {
    throw new InvalidEventError("event", "must be an object");
  }
  const metric = checkText("metric", event.metric);
  const customerRef = checkText("customerRef", event.customerRef);
  parseQuantity(event.quantity);
  const ts = canonicalTime(event.ts ?? now());
  const meta = wireMeta(event.meta);
  if (meta !== undefined) checkMetaText(meta);
  const wire: WireEvent = { metric, customerRef, quantity: event.quantity, ts };
  if (meta !== undefined) wire.meta = meta;
  if (event.idempotencyKey !== undefined && event.idempotencyKey !== null) {
    wire.idempotencyKey = checkText("idempotencyKey", event.idempotencyKey);
    return { wire, idempotencyKey: wire.idempotencyKey, derived: false };
  }
  if (event.ts === undefined || event.ts === null) {
    wire.idempotencyKey = `evt-${randomUUID()}`;
    return { wire, idempotencyKey: wire.idempotencyKey, derived: false };
  }
  return { wire, idempotencyKey: keyOf(canonicalOf(wire)), derived: true };
}

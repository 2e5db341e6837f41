/** The client: send usage events exactly once, read usage, cost projections and audits. */

import { Batcher, type BatcherOptions } from "./batcher.js";
import { type JsonValue, type PreparedEvent, type Quantity, type UsageEvent, prepareEvent } from "./content.js";
import { InvalidEventError, StripeMeterError } from "./errors.js";
import { milliseconds } from "./options.js";
import { type RetryInfo, Transport } from "./transport.js";
import type {
  AdjustmentPage,
  CurrentUsage,
  EventPage,
  EventResult,
  IngestResponse,
  InvoiceAudit,
  Projection,
  ReconciliationReport,
  UsageEventRecord,
  UsageHistory,
  Adjustment,
  WidgetToken,
} from "./types.js";

export const DEFAULT_API_URL = "http://127.0.0.1:3000";
/** The server's default limit on events per ingest request (STRIPEMETER_MAX_BATCH_EVENTS). */
export const MAX_BATCH_EVENTS = 1000;

export interface ClientOptions {
  /** Default `http://127.0.0.1:3000` (what `scripts/run` serves). */
  apiUrl?: string;
  /** Default: the environment's `STRIPEMETER_API_KEY`. */
  apiKey?: string;
  /** How long one attempt may take, answer included. Default 10 s. */
  timeoutMs?: number;
  /** Retries after the first attempt (connection errors, timeouts, 429, 5xx). Default 5. */
  maxRetries?: number;
  /** The first backoff's ceiling; it doubles each retry up to `retryMaxDelayMs`. Default 250 ms. */
  retryInitialDelayMs?: number;
  /** Default 10 s. */
  retryMaxDelayMs?: number;
  /** The longest Retry-After honoured; a longer one is cut to this. Default 60 s. */
  maxRetryAfterMs?: number;
  /** Events per ingest request; larger batches are split. Default (and the server's limit) 1,000. */
  maxBatchEvents?: number;
  /** Another `fetch` (a proxy agent, instrumentation). Default: the global one. */
  fetch?: typeof globalThis.fetch;
  /** Told of each retry before its wait: for logs and metrics. */
  onRetry?: (info: RetryInfo) => void;
}

export interface ListEventsParams {
  metric?: string;
  customerRef?: string;
  /** On the event time, RFC 3339 (or a Date); `until` is exclusive. */
  since?: Date | string;
  until?: Date | string;
  /** Events per request, 1 to 1,000 (default 100). */
  pageSize?: number;
}

export class StripeMeterClient {
  readonly apiUrl: string;
  private readonly transport: Transport;
  /** Events per ingest request at most; larger batches are split. */
  readonly maxBatchEvents: number;

  constructor(options: ClientOptions = {}) {
    const apiKey = options.apiKey ?? process.env["STRIPEMETER_API_KEY"];
    if (!apiKey) {
      throw new StripeMeterError("no API key: pass apiKey or set STRIPEMETER_API_KEY");
    }
    this.apiUrl = options.apiUrl ?? DEFAULT_API_URL;
    this.maxBatchEvents = options.maxBatchEvents ?? MAX_BATCH_EVENTS;
    if (!Number.isInteger(this.maxBatchEvents) || this.maxBatchEvents < 1) {
      throw new StripeMeterError("maxBatchEvents must be a whole number of at least 1");
    }
    const fetcher = options.fetch ?? globalThis.fetch;
    if (typeof fetcher !== "function") {
      throw new StripeMeterError("no global fetch: use Node 18 or later, or pass fetch");
    }
    this.transport = new Transport({
      apiUrl: this.apiUrl,
      apiKey,
      timeoutMs: milliseconds("timeoutMs", options.timeoutMs ?? 10_000, 1),
      maxRetries: retries(options.maxRetries ?? 5),
      retryInitialDelayMs: milliseconds("retryInitialDelayMs", options.retryInitialDelayMs ?? 250),
      retryMaxDelayMs: milliseconds("retryMaxDelayMs", options.retryMaxDelayMs ?? 10_000),
      maxRetryAfterMs: milliseconds("maxRetryAfterMs", options.maxRetryAfterMs ?? 60_000),
      fetch: fetcher,
      onRetry: options.onRetry,
    });
  }

  /**
   * Send one event. Its time is fixed now (when it has none) and its key chosen
   * before the first attempt, so the SDK's retries can only make it a duplicate.
   * Answers its result: `accepted`, `duplicate`, `conflict` or `error` (with
   * `field` and `reason`; an event the SDK cannot send is an `error` too).
   */
  async track(event: UsageEvent): Promise<EventResult> {
    const answer = await this.trackBatch([event]);
    return answer.results[0] as EventResult;
  }

  /**
   * Send events, one result each in order. More than `maxBatchEvents` go in
   * several requests, one after another. An event the SDK cannot send (a
   * quantity past the limits, a time that is no time) is answered `error`
   * here and not sent; the others are.
   */
  async trackBatch(events: UsageEvent[]): Promise<IngestResponse> {
    const results: (EventResult | undefined)[] = new Array(events.length);
    const prepared: PreparedEvent[] = [];
    const positions: number[] = [];
    events.forEach((event, index) => {
      try {
        prepared.push(prepareEvent(event));
        positions.push(index);
      } catch (error) {
        if (!(error instanceof InvalidEventError)) throw error;
        const result: EventResult = { index, status: "error", field: error.field, reason: error.reason };
        if (typeof event?.idempotencyKey === "string") result.idempotencyKey = event.idempotencyKey;
        results[index] = result;
      }
    });
    const sent = await this.sendPrepared(prepared);
    sent.forEach((result, i) => {
      const index = positions[i] as number;
      results[index] = { ...result, index };
    });
    return summarise(results as EventResult[]);
  }

  /**
   * Send events already prepared (their time and key fixed): what the batcher
   * and a caller's own retries use. Results in the same order, indexed from 0.
   */
  async sendPrepared(events: PreparedEvent[]): Promise<EventResult[]> {
    const results: EventResult[] = [];
    for (let start = 0; start < events.length; start += this.maxBatchEvents) {
      const chunk = events.slice(start, start + this.maxBatchEvents);
      const answer = await this.transport.request<IngestResponse>({
        method: "POST",
        path: "/v1/events/ingest",
        body: { events: chunk.map((e) => e.wire) },
      });
      answer.results.forEach((result, i) => {
        const event = chunk[i] as PreparedEvent;
        // An event refused before its key was chosen comes back without one: it is still this one.
        results.push({ ...result, index: start + i, idempotencyKey: result.idempotencyKey ?? event.idempotencyKey });
      });
    }
    return results;
  }

  /**
   * Send CloudEvents 1.0 as a batch (`application/cloudevents-batch+json`;
   * docs/cloudevents.md): the service reads `id` as the idempotency key,
   * `subject` as customerRef, `type` as the metric, `time` as ts and
   * `data` as `{ quantity, meta }`. A usage event given instead is mapped to
   * one, its key as `id`. An `id` is always an explicit key to the service:
   * the same event sent once as JSON without a key and once as a CloudEvent
   * counts twice. More than `maxBatchEvents` go in several requests.
   */
  async sendCloudEvents(
    events: (CloudEvent | UsageEvent)[],
    options: { source?: string } = {},
  ): Promise<IngestResponse> {
    const source = options.source ?? DEFAULT_CLOUDEVENT_SOURCE;
    const checked = events.map((event, index) => toCloudEvent(event, source, index));
    const results: EventResult[] = [];
    for (let start = 0; start < checked.length; start += this.maxBatchEvents) {
      const chunk = checked.slice(start, start + this.maxBatchEvents);
      const answer = await this.transport.request<IngestResponse>({
        method: "POST",
        path: "/v1/events/ingest",
        body: chunk,
        contentType: "application/cloudevents-batch+json",
      });
      answer.results.forEach((result, i) => results.push({ ...result, index: start + i }));
    }
    return summarise(results);
  }

  /** Prepare events as `trackBatch` does (time fixed, key chosen), to send later or again. */
  prepare(events: UsageEvent[]): PreparedEvent[] {
    return events.map((event, index) => {
      try {
        return prepareEvent(event);
      } catch (error) {
        if (error instanceof InvalidEventError) throw new InvalidEventError(error.field, error.reason, index);
        throw error;
      }
    });
  }

  /** The customer's counters in the current billing period, or in `period` (its key). */
  getUsage(customerRef: string, params: { metric?: string; period?: string } = {}): Promise<CurrentUsage> {
    return this.transport.request({
      method: "GET",
      path: "/v1/usage/current",
      query: { customerRef, metric: params.metric, period: params.period },
    });
  }

  /** One customer's usage of one metric in hour or day buckets (UTC), at most 93 days. */
  getUsageHistory(
    customerRef: string,
    metric: string,
    params: { granularity?: "hour" | "day"; since?: Date | string; until?: Date | string } = {},
  ): Promise<UsageHistory> {
    return this.transport.request({
      method: "GET",
      path: "/v1/usage/history",
      query: {
        customerRef,
        metric,
        granularity: params.granularity,
        since: timeParam(params.since),
        until: timeParam(params.until),
      },
    });
  }

  /** What Stripe would bill the customer for the period so far, and a forecast (docs/projection.md). */
  getProjection(customerRef: string, params: { period?: string } = {}): Promise<Projection> {
    return this.transport.request({
      method: "GET",
      path: "/v1/usage/projection",
      query: { customerRef, period: params.period },
    });
  }

  /** Every event matching the filters, in event-log order, fetching page after page. */
  async *listEvents(params: ListEventsParams = {}): AsyncGenerator<UsageEventRecord, void, undefined> {
    let cursor: string | undefined;
    do {
      const page = await this.listEventsPage({ ...params, cursor });
      yield* page.data;
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  /** One page of `GET /v1/events`; pass its `nextCursor` back for the next. */
  listEventsPage(params: ListEventsParams & { cursor?: string | undefined } = {}): Promise<EventPage> {
    return this.transport.request({
      method: "GET",
      path: "/v1/events",
      query: {
        metric: params.metric,
        customerRef: params.customerRef,
        since: timeParam(params.since),
        until: timeParam(params.until),
        limit: params.pageSize,
        cursor: params.cursor,
      },
    });
  }

  /**
   * One invoice line traced: the counter, each push to Stripe and the events it
   * covered. `push` (`live:3`) and `cursor` page one push's events.
   */
  getInvoiceAudit(
    customerRef: string,
    metric: string,
    params: { period?: string; push?: string; cursor?: string } = {},
  ): Promise<InvoiceAudit> {
    return this.transport.request({
      method: "GET",
      path: "/v1/audit/invoice",
      query: { customerRef, metric, period: params.period, push: params.push, cursor: params.cursor },
    });
  }

  /** The latest reconciliation report for a month of period starts (`YYYY-MM`). */
  getReconciliation(month: string): Promise<ReconciliationReport> {
    return this.transport.request({ method: "GET", path: `/v1/reconciliation/${encodeURIComponent(month)}` });
  }

  /** The same report as CSV text (`runId` first, `target` last). */
  getReconciliationCsv(month: string): Promise<string> {
    return this.transport.request({
      method: "GET",
      path: `/v1/reconciliation/${encodeURIComponent(month)}`,
      query: { format: "csv" },
      text: true,
    });
  }

  /**
   * Reconcile now (scope `admin`): one report per month covered. `period` is a
   * month of period starts (`YYYY-MM`; default: every recent period); `repair`
   * pushes what Stripe lacks or holds extra. Retried like every call: a run
   * repeated reads again and repairs nothing twice.
   */
  async runReconciliation(
    params: { period?: string; repair?: boolean; actor?: string } = {},
  ): Promise<ReconciliationReport[]> {
    const body: { [name: string]: unknown } = {};
    if (params.period !== undefined) body["period"] = params.period;
    if (params.repair !== undefined) body["repair"] = params.repair;
    if (params.actor !== undefined) body["actor"] = params.actor;
    const answer = await this.transport.request<{ data: ReconciliationReport[] }>({
      method: "POST",
      path: "/v1/reconciliation/run",
      body,
    });
    return answer.data;
  }

  /**
   * A short-lived token for the `<stripemeter-usage>` widget (docs/widget.md):
   * scope `widget:mint` (or `admin`). It reads one customer's usage until
   * `expiresAt` (`lifetimeSeconds`: 1 to 86,400; 900 by default) and nothing
   * else; hand it to that customer's page only.
   */
  createWidgetToken(customerRef: string, params: { lifetimeSeconds?: number } = {}): Promise<WidgetToken> {
    const body: { customerRef: string; lifetimeSeconds?: number } = { customerRef };
    if (params.lifetimeSeconds !== undefined) body.lifetimeSeconds = params.lifetimeSeconds;
    return this.transport.request({ method: "POST", path: "/v1/widget-tokens", body });
  }

  /** Every adjustment (corrections for closed periods), in the order proposed. */
  async *listAdjustments(
    params: { status?: Adjustment["status"]; pageSize?: number } = {},
  ): AsyncGenerator<Adjustment, void, undefined> {
    let cursor: string | undefined;
    do {
      const page: AdjustmentPage = await this.transport.request({
        method: "GET",
        path: "/v1/adjustments",
        query: { status: params.status, limit: params.pageSize, cursor },
      });
      yield* page.data;
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  /** A background batcher sending through this client (see `Batcher`). */
  createBatcher(options: BatcherOptions = {}): Batcher {
    return new Batcher(this, options);
  }
}

/** A client for `apiUrl` (default `http://127.0.0.1:3000`) with `apiKey` (default `STRIPEMETER_API_KEY`). */
export function createClient(options: ClientOptions = {}): StripeMeterClient {
  return new StripeMeterClient(options);
}

function retries(value: number): number {
  if (!Number.isInteger(value) || value < 0) {
    throw new StripeMeterError("maxRetries must be a whole number, 0 or more");
  }
  return value;
}

function timeParam(value: Date | string | undefined): string | undefined {
  return value instanceof Date ? value.toISOString() : value;
}

function summarise(results: EventResult[]): IngestResponse {
  const count = (status: EventResult["status"]): number => results.filter((r) => r.status === status).length;
  return {
    accepted: count("accepted"),
    duplicates: count("duplicate"),
    conflicts: count("conflict"),
    errors: count("error"),
    results,
  };
}

/** The `source` of CloudEvents this SDK maps from usage events. */
export const DEFAULT_CLOUDEVENT_SOURCE = "stripemeter-sdk-node";

/** A CloudEvent 1.0 carrying usage (docs/cloudevents.md). */
export interface CloudEvent {
  specversion: "1.0";
  id: string;
  source: string;
  type: string;
  subject: string;
  time: string;
  data: { quantity: Quantity; meta?: { [key: string]: JsonValue } };
  [extension: string]: unknown;
}

function isCloudEvent(event: CloudEvent | UsageEvent): event is CloudEvent {
  return typeof event === "object" && event !== null && "specversion" in event;
}

/** A CloudEvent as given (its required attributes checked: retries depend on its id), or one mapped from a usage event. */
function toCloudEvent(event: CloudEvent | UsageEvent, source: string, index: number): CloudEvent {
  if (isCloudEvent(event)) {
    if (event.specversion !== "1.0") throw new InvalidEventError("specversion", "must be \"1.0\"", index);
    for (const name of ["id", "source", "type"] as const) {
      if (typeof event[name] !== "string" || event[name] === "") {
        throw new InvalidEventError(name, "must be a non-empty string: a retry is known by its id", index);
      }
    }
    return event;
  }
  let prepared: PreparedEvent;
  try {
    prepared = prepareEvent(event);
  } catch (error) {
    if (error instanceof InvalidEventError) throw new InvalidEventError(error.field, error.reason, index);
    throw error;
  }
  const { wire } = prepared;
  const data: CloudEvent["data"] = { quantity: wire.quantity };
  if (wire.meta !== undefined) data.meta = wire.meta;
  return {
    specversion: "1.0",
    id: prepared.idempotencyKey,
    source,
    type: wire.metric,
    subject: wire.customerRef,
    time: wire.ts,
    data,
  };
}

/**
 * A background batcher for apps that send many events: `add()` queues, the
 * batcher sends.
 *
 * - The queue is bounded (`maxQueueSize`, counting events queued and those in
 *   a request not yet answered): memory never grows without limit. When it is
 *   full, `add()` waits for room (`whenFull: "block"`, at most
 *   `blockTimeoutMs` when set) or fails at once (`"throw"`), with a
 *   `QueueFullError` either way.
 * - A batch goes out when `maxBatchSize` events are queued, and every
 *   `flushIntervalMs` whatever is queued goes out (the timer is `unref`'d: it
 *   does not keep the process alive; when the process would exit with events
 *   still queued, the batcher sends them first).
 * - `flush()` resolves once every event added before it has an answer;
 *   `close()` flushes and stops the timer.
 * - Each event's time and key are fixed in `add()`: a batch the client
 *   retries sends the same keys, so it can only be a duplicate.
 * - Failures are never silent: every event's result goes to `onResult`, each
 *   that was not recorded (`error`, `conflict`, or its request failed after
 *   the client's retries) to `onError` — by default printed to stderr.
 *
 * One request is in flight at a time: events are sent in the order added.
 */

import type { StripeMeterClient } from "./client.js";
import { type PreparedEvent, type UsageEvent, prepareEvent } from "./content.js";
import { BatcherClosedError, QueueFullError, StripeMeterError } from "./errors.js";
import { milliseconds } from "./options.js";
import type { EventResult } from "./types.js";

export interface BatcherOptions {
  /** Events per request (at most the client's `maxBatchEvents`). Default 500. */
  maxBatchSize?: number;
  /** Events queued or in flight at most. Default 10,000. */
  maxQueueSize?: number;
  /** Send whatever is queued this often. Default 1,000 ms. */
  flushIntervalMs?: number;
  /** When the queue is full: wait for room (default) or throw `QueueFullError`. */
  whenFull?: "block" | "throw";
  /** With `block`: how long `add()` waits for room before `QueueFullError`. Default: no limit. */
  blockTimeoutMs?: number;
  /** Every event's answer, as it comes. */
  onResult?: (result: BatchedResult) => void;
  /** Every event that was not recorded: refused, in conflict, or never answered. */
  onError?: (failure: BatchFailure) => void;
}

/** An event's answer, with the event it answers. */
export interface BatchedResult {
  event: PreparedEvent;
  result: EventResult;
}

export type BatchFailure =
  | { kind: "event"; event: PreparedEvent; result: EventResult }
  /** The request failed after the client's retries; `events` carry their keys: re-adding them is safe. */
  | { kind: "request"; events: PreparedEvent[]; error: unknown };

interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

export class Batcher {
  private readonly client: StripeMeterClient;
  private readonly maxBatchSize: number;
  private readonly maxQueueSize: number;
  private readonly whenFull: "block" | "throw";
  private readonly blockTimeoutMs: number | undefined;
  private readonly onResult: ((result: BatchedResult) => void) | undefined;
  private readonly onError: (failure: BatchFailure) => void;
  private readonly queue: PreparedEvent[] = [];
  private readonly roomWaiters: Waiter[] = [];
  private readonly flushWaiters: { upTo: number; resolve: () => void }[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly onBeforeExit: () => void;
  /** Events added so far, and answered so far (in order: one request at a time). */
  private added = 0;
  private answered = 0;
  /** Send every event added up to this count, batch full or not. */
  private flushUpTo = 0;
  private inFlight = 0;
  private sending = false;
  private closed = false;

  constructor(client: StripeMeterClient, options: BatcherOptions = {}) {
    this.client = client;
    // A batch must go out as one request: a split one could fail half-sent and be
    // reported whole as not sent, the half that counted never reaching onResult.
    this.maxBatchSize = positive("maxBatchSize", options.maxBatchSize ?? Math.min(500, client.maxBatchEvents));
    if (this.maxBatchSize > client.maxBatchEvents) {
      throw new StripeMeterError(
        `maxBatchSize (${this.maxBatchSize}) must be at most the client's maxBatchEvents (${client.maxBatchEvents})`,
      );
    }
    this.maxQueueSize = positive("maxQueueSize", options.maxQueueSize ?? 10_000);
    if (this.maxQueueSize < this.maxBatchSize) {
      throw new StripeMeterError("maxQueueSize must be at least maxBatchSize");
    }
    this.whenFull = options.whenFull ?? "block";
    this.blockTimeoutMs =
      options.blockTimeoutMs === undefined ? undefined : milliseconds("blockTimeoutMs", options.blockTimeoutMs);
    this.onResult = options.onResult;
    this.onError = options.onError ?? printFailure;
    const interval = milliseconds("flushIntervalMs", options.flushIntervalMs ?? 1000, 1);
    this.timer = setInterval(() => this.requestFlush(), interval);
    this.timer.unref();
    this.onBeforeExit = () => {
      if (this.added > this.answered) this.requestFlush();
    };
    process.on("beforeExit", this.onBeforeExit);
  }

  /** Events queued or in flight, not answered yet. */
  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  /**
   * Queue an event: its time is fixed now (when it has none) and its key
   * chosen. Resolves, once it is queued, to the event as it will be sent
   * (`idempotencyKey` is its key). Rejects with `InvalidEventError` for an
   * event that cannot be sent, `QueueFullError` when there is no room.
   */
  async add(event: UsageEvent): Promise<PreparedEvent> {
    if (this.closed) throw new BatcherClosedError("the batcher is closed");
    const prepared = prepareEvent(event);
    while (this.pending + 1 > this.maxQueueSize) {
      if (this.whenFull === "throw") {
        throw new QueueFullError(`the batcher's queue is full (${this.maxQueueSize} events)`);
      }
      await this.waitForRoom();
      if (this.closed) throw new BatcherClosedError("the batcher was closed while add() waited");
    }
    this.queue.push(prepared);
    this.added += 1;
    if (this.queue.length >= this.maxBatchSize) this.pump();
    return prepared;
  }

  /** Resolves once every event added before this call has an answer. */
  flush(): Promise<void> {
    const upTo = this.added;
    if (this.answered >= upTo) return Promise.resolve();
    return new Promise((resolve) => {
      this.flushWaiters.push({ upTo, resolve });
      this.requestFlush();
    });
  }

  /**
   * Stop taking events, send what is queued and wait for the answers. An
   * `add()` still waiting for room is refused (`BatcherClosedError`).
   */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      clearInterval(this.timer);
      process.removeListener("beforeExit", this.onBeforeExit);
      for (const waiter of this.roomWaiters.splice(0)) {
        if (waiter.timer) clearTimeout(waiter.timer);
        waiter.reject(new BatcherClosedError("the batcher was closed while add() waited"));
      }
    }
    await this.flush();
  }

  private requestFlush(): void {
    this.flushUpTo = this.added;
    this.pump();
  }

  private waitForRoom(): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, timer: undefined };
      if (this.blockTimeoutMs !== undefined) {
        waiter.timer = setTimeout(() => {
          const at = this.roomWaiters.indexOf(waiter);
          if (at >= 0) this.roomWaiters.splice(at, 1);
          reject(new QueueFullError(`no room in the batcher's queue within ${this.blockTimeoutMs} ms`));
        }, this.blockTimeoutMs);
      }
      this.roomWaiters.push(waiter);
    });
  }

  /** Send batches, one request at a time, while one is full or a flush asks for it. */
  private pump(): void {
    if (this.sending) return;
    this.sending = true;
    void this.sendWhileDue().finally(() => {
      this.sending = false;
      // An add() or a flush that came while the last answer was being handed out.
      if (this.due()) this.pump();
    });
  }

  private due(): boolean {
    return this.queue.length >= this.maxBatchSize || (this.queue.length > 0 && this.answered < this.flushUpTo);
  }

  private async sendWhileDue(): Promise<void> {
    while (this.due()) {
      const batch = this.queue.splice(0, this.maxBatchSize);
      this.inFlight = batch.length;
      try {
        const results = await this.client.sendPrepared(batch);
        results.forEach((result, i) => this.deliver(batch[i] as PreparedEvent, result));
      } catch (error) {
        this.report({ kind: "request", events: batch, error });
      }
      this.inFlight = 0;
      this.answered += batch.length;
      this.release();
    }
  }

  private deliver(event: PreparedEvent, result: EventResult): void {
    this.call(() => this.onResult?.({ event, result }));
    if (result.status === "error" || result.status === "conflict") {
      this.report({ kind: "event", event, result });
    }
  }

  private report(failure: BatchFailure): void {
    this.call(() => this.onError(failure));
  }

  /**
   * A callback that throws must not stop the batcher (nor lose the other
   * answers); one that is async and rejects must not end the process with an
   * unhandled rejection.
   */
  private call(callback: () => unknown): void {
    const warn = (error: unknown): void => {
      process.emitWarning(`a StripeMeter batcher callback threw: ${String(error)}`);
    };
    try {
      const returned = callback() as PromiseLike<unknown> | undefined;
      if (typeof returned?.then === "function") returned.then(undefined, warn);
    } catch (error) {
      warn(error);
    }
  }

  private release(): void {
    // Each woken add() takes its place as soon as it resumes: wake as many as there is room for.
    let room = this.maxQueueSize - this.pending;
    while (room > 0 && this.roomWaiters.length > 0) {
      const waiter = this.roomWaiters.shift() as Waiter;
      if (waiter.timer) clearTimeout(waiter.timer);
      waiter.resolve();
      room -= 1;
    }
    for (let i = this.flushWaiters.length - 1; i >= 0; i--) {
      const waiter = this.flushWaiters[i] as { upTo: number; resolve: () => void };
      if (this.answered >= waiter.upTo) {
        this.flushWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 1) throw new StripeMeterError(`${name} must be at least 1`);
  return value;
}

function printFailure(failure: BatchFailure): void {
  if (failure.kind === "event") {
    const { result, event } = failure;
    console.error(
      `stripemeter: event ${event.idempotencyKey} was not recorded: ${result.status}` +
        (result.field ? ` (${result.field}: ${result.reason})` : ""),
    );
  } else {
    console.error(`stripemeter: ${failure.events.length} events were not sent: ${String(failure.error)}`);
  }
}

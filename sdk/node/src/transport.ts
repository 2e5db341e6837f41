/**
 * One HTTP call to the service, retried when retrying is safe and may help.
 *
 * Every call the SDK makes is safe to repeat: reads, and ingest, whose events
 * carry their keys from before the first attempt. So a connection error, a
 * timeout, a 429 and a 5xx are retried, with exponential backoff and full
 * jitter (a random wait between 0 and the backoff), or as long as the
 * answer's Retry-After asks; after `maxRetries` retries the last error is
 * thrown. Other 4xx answers are thrown at once as their typed error.
 */

import {
  APIConnectionError,
  type ProblemDetails,
  StripeMeterError,
  APITimeoutError,
  errorForStatus,
} from "./errors.js";
import { VERSION } from "./version.js";

export interface RetryInfo {
  method: string;
  path: string;
  /** The attempt that failed (1 for the first). */
  attempt: number;
  /** How long the SDK waits before the next attempt. */
  delayMs: number;
  error: StripeMeterError;
}

export interface TransportOptions {
  apiUrl: string;
  apiKey: string;
  timeoutMs: number;
  maxRetries: number;
  retryInitialDelayMs: number;
  retryMaxDelayMs: number;
  /** The longest Retry-After the SDK waits for; a longer one is cut to this. */
  maxRetryAfterMs: number;
  fetch: typeof globalThis.fetch;
  onRetry: ((info: RetryInfo) => void) | undefined;
}

export interface Call {
  method: "GET" | "POST";
  path: string;
  query?: { [name: string]: string | number | undefined };
  body?: unknown;
  /** The body's media type; default `application/json`. */
  contentType?: string;
  /** Answer the body as text (CSV) rather than parsed JSON. */
  text?: boolean;
}

export class Transport {
  private readonly options: TransportOptions;
  private readonly base: string;

  constructor(options: TransportOptions) {
    this.options = options;
    this.base = options.apiUrl.replace(/\/+$/, "");
  }

  async request<T>(call: Call): Promise<T> {
    const url = this.url(call);
    const headers: { [name: string]: string } = {
      authorization: `Bearer ${this.options.apiKey}`,
      accept: call.text ? "text/csv, application/problem+json" : "application/json",
      "user-agent": `stripemeter-sdk-node/${VERSION} node/${process.versions.node}`,
    };
    const body = call.body === undefined ? undefined : JSON.stringify(call.body);
    if (body !== undefined) headers["content-type"] = call.contentType ?? "application/json";
    const attempts = this.options.maxRetries + 1;
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.attempt(url, call.method, headers, body, attempt);
      if (outcome.ok) return (call.text ? outcome.text : parseAnswer(outcome.text, call)) as T;
      if (!outcome.retryable || attempt >= attempts) throw outcome.error;
      const delayMs = outcome.retryAfterMs ?? this.backoff(attempt);
      this.tellRetry({ method: call.method, path: call.path, attempt, delayMs, error: outcome.error });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }

  /** `onRetry` is for logs and metrics: one that throws must not cut the retries short. */
  private tellRetry(info: RetryInfo): void {
    try {
      const returned = this.options.onRetry?.(info) as PromiseLike<unknown> | undefined;
      if (typeof returned?.then === "function") returned.then(undefined, warnRetryCallback);
    } catch (error) {
      warnRetryCallback(error);
    }
  }

  private url(call: Call): string {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined) params.set(name, String(value));
    }
    const query = params.toString();
    return `${this.base}${call.path}${query ? `?${query}` : ""}`;
  }

  private async attempt(
    url: string,
    method: string,
    headers: { [name: string]: string },
    body: string | undefined,
    attempt: number,
  ): Promise<Outcome> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.options.timeoutMs);
    let status: number;
    let text: string;
    let retryAfter: string | null;
    try {
      const init: RequestInit = { method, headers, signal: controller.signal };
      if (body !== undefined) init.body = body;
      const response = await this.options.fetch(url, init);
      status = response.status;
      retryAfter = response.headers.get("retry-after");
      text = await response.text(); // within the same timeout: a stalled body is no answer
    } catch (error) {
      const failure = controller.signal.aborted
        ? new APITimeoutError(`no answer from ${method} ${url} within ${this.options.timeoutMs} ms`, attempt, error)
        : new APIConnectionError(`${method} ${url} failed: ${describe(error)}`, attempt, error);
      return { ok: false, retryable: true, error: failure, retryAfterMs: undefined };
    } finally {
      clearTimeout(timer);
    }
    if (status >= 200 && status < 300) return { ok: true, text };
    const retryAfterMs = parseRetryAfter(retryAfter, this.options.maxRetryAfterMs);
    const error = errorForStatus(status, parseProblem(text), attempt, retryAfterMs);
    return { ok: false, retryable: status === 429 || status >= 500, error, retryAfterMs };
  }

  /** Full jitter: a random wait up to the exponential backoff of this attempt. */
  private backoff(attempt: number): number {
    const ceiling = Math.min(
      this.options.retryMaxDelayMs,
      this.options.retryInitialDelayMs * 2 ** (attempt - 1),
    );
    return Math.random() * ceiling;
  }
}

type Outcome =
  | { ok: true; text: string }
  | { ok: false; retryable: boolean; error: StripeMeterError; retryAfterMs: number | undefined };

function parseAnswer(text: string, call: Call): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new StripeMeterError(`${call.method} ${call.path} answered 2xx with no JSON: ${text.slice(0, 200)}`);
  }
}

function parseProblem(text: string): ProblemDetails | undefined {
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === "object" && parsed !== null ? (parsed as ProblemDetails) : undefined;
  } catch {
    return text ? { detail: text.slice(0, 500) } : undefined;
  }
}

/** Retry-After as seconds or an HTTP date, in milliseconds (at most `longest`). */
export function parseRetryAfter(value: string | null, longest: number): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  let ms: number;
  if (/^[0-9]+(\.[0-9]+)?$/.test(trimmed)) ms = Number(trimmed) * 1000;
  else {
    const at = Date.parse(trimmed);
    if (Number.isNaN(at)) return undefined;
    ms = at - Date.now();
  }
  return Math.min(Math.max(ms, 0), longest);
}

function warnRetryCallback(error: unknown): void {
  process.emitWarning(`a StripeMeter onRetry callback threw: ${String(error)}`);
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const detail = cause?.code ?? cause?.message;
    return detail ? `${error.message} (${detail})` : error.message;
  }
  return String(error);
}

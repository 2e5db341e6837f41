/**
 * Every error the SDK throws, in one tree:
 *
 *     StripeMeterError                 anything this SDK throws
 *     ├── InvalidEventError            refused before sending (field, reason)
 *     ├── APIError                     the service answered with an error status
 *     │   ├── BadRequestError          400, 422: field and reason from the problem body
 *     │   ├── AuthenticationError      401: no key, an unknown or a revoked key
 *     │   ├── PermissionDeniedError    403: the key lacks the scope
 *     │   ├── NotFoundError            404: no such metric, customer, report
 *     │   ├── ConflictError            409
 *     │   ├── RateLimitError           429, after the retries (retryAfterMs)
 *     │   └── ServerError              5xx, after the retries
 *     ├── APIConnectionError           no answer (refused, reset), after the retries
 *     │   └── APITimeoutError          no answer within timeoutMs, after the retries
 *     ├── QueueFullError               the batcher's queue is full ("throw", or a block timed out)
 *     └── BatcherClosedError           add() after close()
 *
 * Per-event outcomes of an ingest (duplicate, conflict, error) are results,
 * not exceptions: one bad event refuses only itself.
 */

/** One refused field of a problem answer: as the client sent it, and why. */
export interface FieldReason {
  field: string;
  reason: string;
}

/** The RFC 9457 problem body every error answer of the service carries. */
export interface ProblemDetails {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  errors?: FieldReason[];
}

export class StripeMeterError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An event the SDK cannot send as given: its content key could not be what the server derives. */
export class InvalidEventError extends StripeMeterError {
  readonly field: string;
  readonly reason: string;
  /** The event's position in the batch, when it came in one. */
  readonly index: number | undefined;

  constructor(field: string, reason: string, index?: number) {
    super(index === undefined ? `${field}: ${reason}` : `events[${index}].${field}: ${reason}`);
    this.field = field;
    this.reason = reason;
    this.index = index;
  }
}

export class APIError extends StripeMeterError {
  readonly status: number;
  readonly problem: ProblemDetails | undefined;
  /** How many attempts were made (more than 1 when the SDK retried). */
  readonly attempts: number;

  constructor(status: number, problem: ProblemDetails | undefined, attempts: number) {
    const detail = problem?.detail ?? problem?.title ?? "no detail";
    super(`HTTP ${status}: ${detail}`);
    this.status = status;
    this.problem = problem;
    this.attempts = attempts;
  }
}

/** 400 or 422: the request (or a value in it) breaks a rule; `field` and `reason` say which. */
export class BadRequestError extends APIError {
  readonly field: string | undefined;
  readonly reason: string | undefined;
  readonly errors: FieldReason[];

  constructor(status: number, problem: ProblemDetails | undefined, attempts: number) {
    super(status, problem, attempts);
    this.errors = problem?.errors ?? [];
    this.field = this.errors[0]?.field;
    this.reason = this.errors[0]?.reason;
  }
}

export class AuthenticationError extends APIError {}
export class PermissionDeniedError extends APIError {}
export class NotFoundError extends APIError {}
export class ConflictError extends APIError {}

export class RateLimitError extends APIError {
  /** What the last answer's Retry-After asked for, in milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(
    status: number,
    problem: ProblemDetails | undefined,
    attempts: number,
    retryAfterMs: number | undefined,
  ) {
    super(status, problem, attempts);
    this.retryAfterMs = retryAfterMs;
  }
}

export class ServerError extends APIError {}

/** The service could not be reached, or the connection broke before an answer. */
export class APIConnectionError extends StripeMeterError {
  readonly attempts: number;

  constructor(message: string, attempts: number, cause?: unknown) {
    super(message, { cause });
    this.attempts = attempts;
  }
}

/** No answer within the client's `timeoutMs` (on the last attempt). */
export class APITimeoutError extends APIConnectionError {}

export class QueueFullError extends StripeMeterError {}

export class BatcherClosedError extends StripeMeterError {}

/** The typed error for an error answer. */
export function errorForStatus(
  status: number,
  problem: ProblemDetails | undefined,
  attempts: number,
  retryAfterMs?: number,
): APIError {
  if (status === 400 || status === 422) return new BadRequestError(status, problem, attempts);
  if (status === 401) return new AuthenticationError(status, problem, attempts);
  if (status === 403) return new PermissionDeniedError(status, problem, attempts);
  if (status === 404) return new NotFoundError(status, problem, attempts);
  if (status === 409) return new ConflictError(status, problem, attempts);
  if (status === 429) return new RateLimitError(status, problem, attempts, retryAfterMs);
  if (status >= 500) return new ServerError(status, problem, attempts);
  return new APIError(status, problem, attempts);
}

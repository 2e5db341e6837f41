/**
 * StripeMeter for Node: `createClient({ apiUrl, apiKey })`, then `track`,
 * `trackBatch`, `getUsage`, `getProjection`, `listEvents`, the audit and
 * reconciliation reads, and `createBatcher` for high-volume sending.
 */

export {
  createClient,
  StripeMeterClient,
  DEFAULT_API_URL,
  DEFAULT_CLOUDEVENT_SOURCE,
  MAX_BATCH_EVENTS,
} from "./client.js";
export type { ClientOptions, CloudEvent, ListEventsParams } from "./client.js";
export { Batcher } from "./batcher.js";
export type { BatcherOptions, BatchedResult, BatchFailure } from "./batcher.js";
export { contentKey, canonicalQuantity, canonicalTime, canonicalMeta, prepareEvent } from "./content.js";
export type {
  ContentKey,
  JsonValue,
  Meta,
  PreparedEvent,
  Quantity,
  UsageEvent,
  WireEvent,
} from "./content.js";
export {
  APIError,
  AuthenticationError,
  BadRequestError,
  BatcherClosedError,
  ConflictError,
  APIConnectionError,
  InvalidEventError,
  NotFoundError,
  PermissionDeniedError,
  QueueFullError,
  RateLimitError,
  ServerError,
  StripeMeterError,
  APITimeoutError,
} from "./errors.js";
export type { FieldReason, ProblemDetails } from "./errors.js";
export type { RetryInfo } from "./transport.js";
export type * from "./types.js";
export { VERSION } from "./version.js";

/**
 * The service's answers, field for field as they are on the wire (camelCase;
 * see api/schemas.py and api/schemas_projection.py). Quantities and money in
 * major units are decimal strings: no float ever rounds them.
 */

import type { JsonValue } from "./content.js";

export type EventStatus = "accepted" | "duplicate" | "conflict" | "error";
export type LateMark = "in_window" | "carried" | "held" | "past_window" | "history";

/** One event's answer, at its position in the request. */
export interface EventResult {
  index: number;
  status: EventStatus;
  /** The event's key: the one it was sent with, or the content key derived for it. */
  idempotencyKey?: string;
  /** On `error` and `conflict`: the field at fault and why. */
  field?: string;
  reason?: string;
  /** On an accepted event whose period had ended (docs/api.md, "Late events"), or `history`: imported as history (docs/import.md). */
  late?: LateMark;
  /** Only when a usage cap decided the event: `soft` (accepted, past a soft cap), `hard` (refused). */
  cap?: "soft" | "hard";
}

export interface IngestResponse {
  accepted: number;
  duplicates: number;
  conflicts: number;
  errors: number;
  results: EventResult[];
}

export interface UsageEventRecord {
  id: string;
  metric: string;
  customerRef: string;
  period: string;
  quantity: string;
  ts: string;
  recordedAt: string;
  idempotencyKey: string;
  meta: { [key: string]: JsonValue };
  /** `counted`, `late`, `correction` or `moved`. */
  status: string;
  note: string | null;
}

export interface EventPage {
  data: UsageEventRecord[];
  nextCursor: string | null;
}

export interface Counter {
  metric: string;
  customerRef: string;
  period: string;
  aggregation: string;
  value: string;
  sum: string;
  count: number;
  max: string | null;
  last: string | null;
  lastAt: string | null;
  watermark: string | null;
  lateEvents: number;
}

export interface NotBilled {
  metric: string;
  period: string;
  periodStart: string;
  periodEnd: string;
  value: string;
  reason: string;
}

export interface CurrentUsage {
  customerRef: string;
  period: string;
  periodStart: string;
  periodEnd: string;
  counters: Counter[];
  notBilled: NotBilled[];
}

export interface Bucket {
  start: string;
  value: string;
  sum: string;
  count: number;
  max: string | null;
  last: string | null;
}

export interface UsageHistory {
  customerRef: string;
  metric: string;
  granularity: "hour" | "day";
  buckets: Bucket[];
}

/** Money: integer minor units, and the same in major units as a decimal string. */
export interface Money {
  amount: number;
  decimal: string;
}

export interface ProjectionLine {
  metric: string;
  stripePriceId: string;
  stripeSubscriptionItemId: string;
  stripeMeterId: string;
  currency: string;
  quantity: string;
  billedQuantity: number;
  amountSoFar: Money;
  forecast: { quantity: string; amount: Money; method: string };
  counterWatermark: string | null;
  lastConfirmedPushAt: string | null;
}

export interface Projection {
  customerRef: string;
  period: { key: string; start: string; end: string };
  currency: string | null;
  lines: ProjectionLine[];
  subtotal: Money | null;
  total: Money | null;
  forecastTotal: Money | null;
  unpriced: { metric: string; quantity: string; reason: string }[];
  reason: string | null;
  freshness: {
    counterWatermark: string | null;
    lastConfirmedPushAt: string | null;
    projectionLagEvents: number;
    asOf: string;
  };
}

export interface Push {
  target: string;
  number: number;
  identifier: string;
  value: number;
  mode: string;
  status: string;
  settledBy: string | null;
  reason: string | null;
  stripeTimestamp: string;
  requestedAt: string;
  settledAt: string | null;
  coversVersions: number[];
  events: UsageEventRecord[];
  eventsNextCursor: string | null;
  purpose: string;
}

export interface InvoiceAudit {
  customerRef: string;
  metric: string;
  period: string;
  periodStart: string;
  periodEnd: string;
  counter: Counter | null;
  stripeUnitsConfirmed: { [target: string]: number };
  pushes: Push[];
  unpushedEvents: UsageEventRecord[];
  unpushedNextCursor: string | null;
  repairs: {
    target: string;
    recordedAt: string;
    stripeTotal: number;
    expectedTotal: number;
    actor: string;
    reason: string;
  }[];
  closing: {
    invoiceId: string | null;
    finalizesAt: string | null;
    closedAt: string | null;
    verdict: string | null;
    local: number | null;
    stripe: number | null;
    invoiceQuantity: number | null;
  } | null;
  notBilledReason: string | null;
  movedTo: string[];
  /** The period holds imported history (docs/import.md): counted, never pushed to Stripe. */
  history: boolean;
}

export interface ReconciliationLine {
  customerRef: string;
  metric: string;
  period: string;
  periodStart: string;
  periodEnd: string;
  stripeCustomerId: string;
  meterId: string;
  local: number;
  stripe: number | null;
  expected: number;
  difference: number | null;
  status: string;
  cause: string;
  closed: boolean;
  verdict: string | null;
  target: "live" | "shadow";
}

export interface ReconciliationReport {
  runId: string;
  month: string;
  startedAt: string;
  finishedAt: string;
  trigger: string;
  actor: string;
  repair: boolean;
  stripeCalls: number;
  counts: { [status: string]: number };
  lines: ReconciliationLine[];
}

export interface Adjustment {
  id: string;
  customerRef: string;
  metric: string;
  quantity: string;
  events: number;
  status: "pending" | "applied" | "rejected" | "reverted";
  sourcePeriod: string | null;
  sourceKey: string | null;
  proposedBy: string;
  reason: string;
  proposedAt: string;
  decidedBy: string | null;
  decisionReason: string | null;
  decidedAt: string | null;
  appliedTo: string | null;
  revertedIn: string | null;
}

export interface AdjustmentPage {
  data: Adjustment[];
  nextCursor: string | null;
}

/** A minted widget token (`POST /v1/widget-tokens`): shown once, read-only, one customer. */
export interface WidgetToken {
  token: string;
  customerRef: string;
  expiresAt: string;
}

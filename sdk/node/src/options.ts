/** Checks of the numbers a client or batcher is configured with. */

import { StripeMeterError } from "./errors.js";

/** The longest delay `setTimeout` keeps: a longer one (Infinity too) fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A duration a timer can wait: a finite number of milliseconds, `least` to `MAX_TIMER_MS`. */
export function milliseconds(name: string, value: number, least = 0): number {
  if (typeof value !== "number" || !(value >= least && value <= MAX_TIMER_MS)) {
    throw new StripeMeterError(`${name} must be a number of milliseconds from ${least} to ${MAX_TIMER_MS}`);
  }
  return value;
}

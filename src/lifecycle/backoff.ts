/**
 * Capped exponential backoff with jitter (DESIGN.md §4 rule 3), as a pure function: the attempt number and the
 * random draw are inputs, so the schedule is testable without a clock or a seeded generator.
 *
 * Jitter is "equal jitter": the delay is drawn from the upper half of the step, [step/2, step]. Full jitter
 * ([0, step]) could retry at once after many failures; no jitter would make every daemon restarted together
 * (a registry outage, a fleet reboot) retry in lockstep. The cap applies after the jitter, so no delay exceeds it.
 */

export interface BackoffPolicy {
  /** The first step, in milliseconds. */
  readonly baseMillis: number
  /** No delay is longer than this, in milliseconds. */
  readonly capMillis: number
}

/** The upper bound of the delay after `failures` consecutive failures (1 for the first). */
export const backoffStepMillis = (failures: number, policy: BackoffPolicy): number =>
  // Math.min before the power can overflow: 2 ** 1100 is Infinity, and Infinity * 0 would be NaN.
  Math.min(policy.capMillis, policy.baseMillis * 2 ** Math.min(Math.max(failures - 1, 0), 1000))

/** The delay before retrying after `failures` consecutive failures; `random` is a draw from [0, 1). */
export const backoffDelayMillis = (failures: number, policy: BackoffPolicy, random: number): number => {
  const step = backoffStepMillis(failures, policy)
  return Math.floor(step / 2 + (step / 2) * random)
}

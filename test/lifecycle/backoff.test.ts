/**
 * Capped exponential backoff with equal jitter (src/lifecycle/backoff.ts), shared by the registry session and the
 * beacon: every delay lies in [step/2, step], steps double from the base, and nothing passes the cap.
 */
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { backoffDelayMillis, backoffStepMillis } from "../../src/lifecycle/backoff.ts"

describe("backoff", () => {
  it("stays within [step/2, step], the step doubles from the base and never passes the cap", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (failures, baseMillis, extra, random) => {
          const policy = { baseMillis, capMillis: baseMillis + extra }
          const step = backoffStepMillis(failures, policy)
          const delay = backoffDelayMillis(failures, policy, random)
          assert.isAtMost(step, policy.capMillis)
          assert.strictEqual(step, Math.min(policy.capMillis, baseMillis * 2 ** (failures - 1)))
          assert.isAtLeast(delay, Math.floor(step / 2))
          assert.isAtMost(delay, step)
          assert.isAtLeast(backoffStepMillis(failures + 1, policy), step)
        }
      ),
      { numRuns: 500 }
    )
  })
})

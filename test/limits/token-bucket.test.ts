import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { TokenBuckets } from "../../src/limits/token-bucket.ts"

describe("TokenBuckets", () => {
  it("allows the burst at once, then refuses until tokens refill", () => {
    const tb = new TokenBuckets<string>({ burst: 3, perSecond: 1, maxKeys: 10 })
    expect([1, 2, 3, 4].map(() => tb.take("a", 0))).toEqual([true, true, true, false])
    expect(tb.take("a", 999)).toBe(false)
    expect(tb.take("a", 1000)).toBe(true)
    expect(tb.take("a", 1000)).toBe(false)
  })

  it("keeps keys independent", () => {
    const tb = new TokenBuckets<string>({ burst: 1, perSecond: 1, maxKeys: 10 })
    expect(tb.take("a", 0)).toBe(true)
    expect(tb.take("a", 0)).toBe(false)
    expect(tb.take("b", 0)).toBe(true)
  })

  it("never holds more than the burst, however long a key was idle", () => {
    const tb = new TokenBuckets<string>({ burst: 2, perSecond: 10, maxKeys: 10 })
    tb.take("a", 0)
    const allowed = [0, 0, 0].map(() => tb.take("a", 3_600_000))
    expect(allowed).toEqual([true, true, false])
  })

  it("does not refill when time goes backwards", () => {
    const tb = new TokenBuckets<string>({ burst: 1, perSecond: 1, maxKeys: 10 })
    expect(tb.take("a", 10_000)).toBe(true)
    expect(tb.take("a", 5_000)).toBe(false)
    expect(tb.take("a", 10_500)).toBe(false)
  })

  it("stays within maxKeys, pruning refilled buckets before evicting live ones", () => {
    const tb = new TokenBuckets<number>({ burst: 1, perSecond: 1, maxKeys: 3 })
    tb.take(1, 0)
    tb.take(2, 0)
    tb.take(3, 5_000) // 1 and 2 have refilled by t=5 s, 3 has not
    tb.take(4, 5_000) // room is made by pruning 1 and 2, not by evicting 3
    expect(tb.size).toBe(2)
    expect(tb.evictions).toBe(0)
    expect(tb.take(3, 5_000)).toBe(false) // 3 kept its spent bucket
  })

  it("evicts the least recently used key when no bucket has refilled", () => {
    const tb = new TokenBuckets<number>({ burst: 1, perSecond: 0.001, maxKeys: 2 })
    tb.take(1, 0)
    tb.take(2, 0)
    tb.take(1, 1) // 1 is now more recent than 2
    tb.take(3, 2) // evicts 2
    expect(tb.evictions).toBe(1)
    expect(tb.take(1, 3)).toBe(false) // still tracked and empty
    expect(tb.take(2, 3)).toBe(true) // forgotten, so fresh
  })

  it("property: over any schedule a key is allowed at most burst + rate × elapsed", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 400 })), { maxLength: 300 }),
        (burst, perSecond, steps) => {
          const tb = new TokenBuckets<number>({ burst, perSecond, maxKeys: 2 })
          const allowed = new Map<number, number>()
          let now = 0
          for (const [key, dt] of steps) {
            now += dt
            if (tb.take(key, now)) allowed.set(key, (allowed.get(key) ?? 0) + 1)
          }
          expect(tb.size).toBeLessThanOrEqual(2)
          // Evictions can hand a key a fresh bucket, so each eviction may add at most one burst.
          for (const count of allowed.values()) {
            expect(count).toBeLessThanOrEqual(burst * (1 + tb.evictions) + (perSecond * now) / 1000)
          }
        }
      ),
      { numRuns: 300 }
    )
  })
})

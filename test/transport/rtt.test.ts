import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { INITIAL_RTO_MS, MAX_RTO_MS, MIN_RTO_MS, RttEstimator } from "../../src/transport/rtt.ts"

describe("RttEstimator (RFC 6298)", () => {
  it("starts at 1 s with no smoothed RTT", () => {
    const rtt = new RttEstimator()
    expect(rtt.rto).toBe(INITIAL_RTO_MS)
    expect(rtt.srtt).toBeUndefined()
  })

  it("takes the first sample as SRTT with RTTVAR = R/2 (§2.2)", () => {
    const rtt = new RttEstimator()
    rtt.sample(400)
    expect(rtt.srtt).toBe(400)
    expect(rtt.rttvar).toBe(200)
    expect(rtt.rto).toBe(400 + 4 * 200)
  })

  it("smooths later samples with alpha 1/8 and beta 1/4 (§2.3)", () => {
    const rtt = new RttEstimator()
    rtt.sample(400)
    rtt.sample(800)
    // RTTVAR = 3/4·200 + 1/4·|400 − 800| = 250; SRTT = 7/8·400 + 1/8·800 = 450.
    expect(rtt.rttvar).toBe(250)
    expect(rtt.srtt).toBe(450)
    expect(rtt.rto).toBe(450 + 4 * 250)
  })

  it("never lets K·RTTVAR fall below the 10 ms clock granularity", () => {
    const rtt = new RttEstimator()
    for (let i = 0; i < 200; i++) rtt.sample(300)
    expect(rtt.rttvar).toBeLessThan(2.5)
    expect(rtt.rto).toBeCloseTo(310, 6)
  })

  it("clamps the RTO to [200 ms, 10 s]", () => {
    const fast = new RttEstimator()
    fast.sample(1)
    expect(fast.rto).toBe(MIN_RTO_MS)
    const slow = new RttEstimator()
    slow.sample(6_000)
    expect(slow.rto).toBe(MAX_RTO_MS)
  })

  it("doubles on backoff up to 10 s, and a new sample recomputes it", () => {
    const rtt = new RttEstimator()
    const seen: Array<number> = []
    for (let i = 0; i < 6; i++) {
      rtt.backoff()
      seen.push(rtt.rto)
    }
    expect(seen).toEqual([2_000, 4_000, 8_000, 10_000, 10_000, 10_000])
    rtt.sample(100)
    expect(rtt.rto).toBe(300)
  })

  it("applies Karn's rule: no sample from a retransmitted or SACKed segment", () => {
    const rtt = new RttEstimator()
    expect(rtt.onAcked(0, 5_000, 2, false)).toBe(false)
    expect(rtt.onAcked(0, 5_000, 1, true)).toBe(false)
    expect(rtt.srtt).toBeUndefined()
    expect(rtt.onAcked(1_000, 1_120, 1, false)).toBe(true)
    expect(rtt.srtt).toBe(120)
  })

  it("keeps the RTO inside its clamps whatever the samples and backoffs", () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.double({ min: 0, max: 120_000, noNaN: true }), fc.constant(-1)), { maxLength: 60 }), (ops) => {
        const rtt = new RttEstimator()
        for (const op of ops) {
          if (op < 0) rtt.backoff()
          else rtt.sample(op)
          if (rtt.rto < MIN_RTO_MS || rtt.rto > MAX_RTO_MS) return false
        }
        return true
      }),
      { numRuns: 300 }
    )
  })
})

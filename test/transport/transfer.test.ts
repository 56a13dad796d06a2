/**
 * End-to-end properties of the stream transport over the seeded simulated network: whatever the loss,
 * duplication, reordering, delay and partitions, every byte arrives exactly once and in order and both
 * sides close cleanly — or the connection ends with a typed error. The harness (`stream-harness.ts`)
 * throws at the first corrupted, duplicated or extra byte, on any buffer over its cap and on a stall, with
 * the seed in the message; these tests add what a finished run must look like.
 */
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { StreamFailure } from "../../src/transport/stream.ts"
import { type LinkConditions, Rng } from "./simulated-network.ts"
import { runTransfer, type SideOutcome, type TransferPlan, type TransferReport } from "./stream-harness.ts"

const MAX_BYTES = 1_000_000
const typedFailures: ReadonlyArray<SideOutcome> = StreamFailure.literals

const conditions: fc.Arbitrary<LinkConditions> = fc.record({
  loss: fc.double({ min: 0, max: 0.3, noNaN: true }),
  duplicate: fc.double({ min: 0, max: 0.1, noNaN: true }),
  reorder: fc.double({ min: 0, max: 0.1, noNaN: true }),
  delayMs: fc.integer({ min: 1, max: 100 }),
  jitterMs: fc.integer({ min: 0, max: 30 }),
  partitions: fc.oneof(
    { weight: 3, arbitrary: fc.constant([]) },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.integer({ min: 0, max: 20_000 }), fc.integer({ min: 100, max: 90_000 }))
        .map(([from, length]) => [{ from, to: from + length }])
    }
  )
})

const isn = fc.oneof(fc.constant(0), fc.integer({ min: 0xffff0000, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }))

const planArbitrary = (bothWays: boolean): fc.Arbitrary<TransferPlan> =>
  fc.record({
    seed: fc.integer({ min: 1, max: 0x7fffffff }),
    conditions,
    sizeA: fc.integer({ min: 0, max: MAX_BYTES }),
    sizeB: bothWays ? fc.integer({ min: 0, max: MAX_BYTES }) : fc.constant(0),
    maxWriteBytes: fc.integer({ min: 1, max: 100_000 }),
    listenerCloses: fc.constantFrom("after_writing" as const, "after_peer_closed" as const),
    isnA: isn,
    isnB: isn,
    noDelayA: fc.boolean(),
    noDelayB: fc.boolean()
  }).map(({ seed, sizeA, sizeB, isnA, isnB, noDelayA, noDelayB, ...rest }) => {
    const data = new Rng(seed)
    // A megabyte in writes of a few bytes costs seconds of CPU and proves nothing more than 64 KiB does.
    const cap = rest.maxWriteBytes < 64 ? 64 * 1024 : MAX_BYTES
    return {
      ...rest,
      seed,
      aToB: data.bytes(Math.min(sizeA, cap)),
      bToA: data.bytes(Math.min(sizeB, cap)),
      optionsA: { isn: isnA, noDelay: noDelayA },
      optionsB: { isn: isnB, noDelay: noDelayB }
    }
  })

const benign = (plan: TransferPlan) => plan.conditions.loss <= 0.05 && (plan.conditions.partitions ?? []).length === 0

/** What every finished run must satisfy; returns the outcome pair for the caller's statistics. */
const judge = (plan: TransferPlan, report: TransferReport): string => {
  const { a, b } = report
  const context = `${report.describe} A=${a.outcome} B=${b.outcome}`
  expect(a.outcome === "closed" || typedFailures.includes(a.outcome), context).toBe(true)
  expect(b.outcome === "closed" || b.outcome === "never_opened" || typedFailures.includes(b.outcome), context).toBe(true)
  const complete = a.received === plan.bToA.byteLength && b.received === plan.aToB.byteLength
  // A side that closed cleanly had its FIN acknowledged and consumed the peer's: both streams are whole.
  if (a.outcome === "closed" || b.outcome === "closed") expect(complete, context).toBe(true)
  if (a.outcome === "closed" && b.outcome === "closed") expect(a.peerClosed && b.peerClosed, context).toBe(true)
  if (benign(plan)) expect([a.outcome, b.outcome], context).toEqual(["closed", "closed"])
  return `${a.outcome}/${b.outcome}`
}

const property = (bothWays: boolean, numRuns: number) => {
  const outcomes = new Map<string, number>()
  fc.assert(
    fc.property(planArbitrary(bothWays), (plan) => {
      const key = judge(plan, runTransfer(plan))
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1)
    }),
    // No shrinking: a failing plan is reproducible from the seeds in the message, and shrinking
    // megabyte transfers would take minutes.
    { numRuns, endOnFailure: true }
  )
  // Not vacuous: most runs, lossy ones included, must get everything through.
  expect(outcomes.get("closed/closed") ?? 0).toBeGreaterThan(numRuns / 2)
}

describe("stream transfers over a lossy network", () => {
  it("one direction: every byte exactly once and in order, clean close — or a typed failure", () => {
    property(false, 50)
  })

  it("both directions at once: the same for each direction", () => {
    property(true, 40)
  })

  it("with small receive buffers and slow readers (zero windows, probes, window updates)", () => {
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer({ min: 1, max: 0x7fffffff }),
          loss: fc.double({ min: 0, max: 0.15, noNaN: true }),
          size: fc.integer({ min: 0, max: 300_000 }),
          bufferUnits: fc.integer({ min: 1, max: 8 }),
          readerDelayMs: fc.integer({ min: 0, max: 3_000 })
        }),
        ({ seed, loss, size, bufferUnits, readerDelayMs }) => {
          const data = new Rng(seed)
          const plan: TransferPlan = {
            seed,
            conditions: { loss, duplicate: 0.02, reorder: 0.02, delayMs: 20, jitterMs: 5 },
            aToB: data.bytes(size),
            bToA: data.bytes(size >> 2),
            maxWriteBytes: 50_000,
            listenerCloses: "after_peer_closed",
            optionsA: { receiveBufferBytes: bufferUnits * 4096 },
            optionsB: { receiveBufferBytes: bufferUnits * 4096 },
            readerDelayMs
          }
          judge(plan, runTransfer(plan))
        }
      ),
      { numRuns: 25, endOnFailure: true }
    )
  })

  it("10 MB without loss", () => {
    const data = new Rng(10).bytes(10 * 1024 * 1024)
    const report = runTransfer({
      seed: 10,
      conditions: { loss: 0, duplicate: 0, reorder: 0, delayMs: 20, jitterMs: 2 },
      aToB: data,
      bToA: new Uint8Array(0),
      maxWriteBytes: 64 * 1024,
      listenerCloses: "after_peer_closed"
    })
    expect([report.a.outcome, report.b.outcome]).toEqual(["closed", "closed"])
    expect(report.b.received).toBe(data.byteLength)
    expect(report.a.info).toMatchObject({ retransmits: 0, fast_retx: 0, bytes_sent: data.byteLength })
  })

  it("10 MB with 10 % loss in both directions", () => {
    const data = new Rng(11).bytes(10 * 1024 * 1024)
    const report = runTransfer({
      seed: 11,
      conditions: { loss: 0.1, duplicate: 0.01, reorder: 0.01, delayMs: 20, jitterMs: 2 },
      aToB: data,
      bToA: new Uint8Array(0),
      maxWriteBytes: 64 * 1024,
      listenerCloses: "after_peer_closed"
    })
    expect([report.a.outcome, report.b.outcome]).toEqual(["closed", "closed"])
    expect(report.b.received).toBe(data.byteLength)
    expect(report.a.info?.fast_retx).toBeGreaterThan(0)
  })

  it("a partition longer than the retransmission budget ends both sides with typed errors, not a hang", () => {
    const data = new Rng(12).bytes(2_000_000)
    const report = runTransfer({
      seed: 12,
      conditions: { loss: 0, duplicate: 0, reorder: 0, delayMs: 20, jitterMs: 0, partitions: [{ from: 100, to: 3_600_000 }] },
      aToB: data,
      bToA: new Uint8Array(0),
      maxWriteBytes: 64 * 1024,
      listenerCloses: "after_peer_closed"
    })
    expect(report.a.outcome).toBe("retransmit_budget_exhausted")
    expect(report.b.outcome).toBe("idle_timeout")
    expect(report.b.received).toBeLessThan(data.byteLength)
  })

  it("a dial into a partition is a dial_timeout", () => {
    const report = runTransfer({
      seed: 13,
      conditions: { loss: 0, duplicate: 0, reorder: 0, delayMs: 20, jitterMs: 0, partitions: [{ from: 0, to: 3_600_000 }] },
      aToB: new Uint8Array(10),
      bToA: new Uint8Array(0),
      maxWriteBytes: 10,
      listenerCloses: "after_peer_closed"
    })
    expect([report.a.outcome, report.b.outcome]).toEqual(["dial_timeout", "never_opened"])
  })
})

import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import {
  CongestionControl,
  INITIAL_WINDOW_SEGMENTS,
  MAX_CWND_BYTES,
  type RecoveryPhase
} from "../../src/transport/congestion.ts"

const MSS = 1000

type Op =
  | { readonly ack: number; readonly to: number; readonly effect?: string }
  | { readonly dup: true; readonly flight: number; readonly nxt: number; readonly starts?: boolean }
  | { readonly timeout: true; readonly flight: number; readonly nxt: number }

interface Expect {
  readonly cwnd: number
  readonly ssthresh: number
  readonly phase: RecoveryPhase
}

interface Row {
  readonly name: string
  readonly maxWindow?: number
  readonly steps: ReadonlyArray<readonly [Op, Expect]>
}

const dup = (flight: number, nxt: number, starts = false): Op => ({ dup: true, flight, nxt, starts })
const ack = (acked: number, to: number, effect = "normal"): Op => ({ ack: acked, to, effect })
const timeout = (flight: number, nxt: number): Op => ({ timeout: true, flight, nxt })
const state = (cwnd: number, ssthresh: number, phase: RecoveryPhase = "open"): Expect => ({ cwnd, ssthresh, phase })

// maxWindow 40 000 → initial ssthresh 20 000, initial window 10 000 (10 × MSS).
const rows: ReadonlyArray<Row> = [
  {
    name: "slow start grows by the bytes acked, at most 2·MSS per ACK (ABC, L = 2)",
    maxWindow: 40_000,
    steps: [
      [ack(1_000, 1_000), state(11_000, 20_000)],
      [ack(5_000, 6_000), state(13_000, 20_000)],
      [ack(1, 6_001), state(13_001, 20_000)]
    ]
  },
  {
    name: "congestion avoidance grows by MSS·acked/cwnd, at least 1 byte",
    maxWindow: 40_000,
    steps: [
      [ack(2_000, 2_000), state(12_000, 20_000)],
      [ack(2_000, 4_000), state(14_000, 20_000)],
      [ack(2_000, 6_000), state(16_000, 20_000)],
      [ack(2_000, 8_000), state(18_000, 20_000)],
      [ack(2_000, 10_000), state(20_000, 20_000)],
      [ack(1_000, 11_000), state(20_050, 20_000)],
      [ack(1, 11_001), state(20_051, 20_000)]
    ]
  },
  {
    name: "cwnd never exceeds the maximum window",
    maxWindow: 11_000,
    steps: [
      [ack(10_000, 10_000), state(11_000, 5_500)],
      [ack(10_000, 20_000), state(11_000, 5_500)]
    ]
  },
  {
    name: "3rd duplicate ACK: ssthresh = FlightSize/2, cwnd = ssthresh; later duplicates inflate nothing",
    maxWindow: 40_000,
    steps: [
      [dup(10_000, 10_000), state(10_000, 20_000)],
      [dup(10_000, 10_000), state(10_000, 20_000)],
      [dup(10_000, 10_000, true), state(5_000, 5_000, "fast_recovery")],
      [dup(10_000, 10_000), state(5_000, 5_000, "fast_recovery")],
      [dup(10_000, 10_000), state(5_000, 5_000, "fast_recovery")]
    ]
  },
  {
    name: "ssthresh is at least 2·MSS",
    maxWindow: 40_000,
    steps: [
      [dup(3_000, 3_000), state(10_000, 20_000)],
      [dup(3_000, 3_000), state(10_000, 20_000)],
      [dup(3_000, 3_000, true), state(2_000, 2_000, "fast_recovery")]
    ]
  },
  {
    name: "a partial ACK keeps the episode; duplicates after it neither restart it nor re-halve ssthresh",
    maxWindow: 40_000,
    steps: [
      [dup(10_000, 10_000), state(10_000, 20_000)],
      [dup(10_000, 10_000), state(10_000, 20_000)],
      [dup(10_000, 10_000, true), state(5_000, 5_000, "fast_recovery")],
      [ack(1_000, 1_000, "partial"), state(5_000, 5_000, "fast_recovery")],
      [dup(9_000, 10_000), state(5_000, 5_000, "fast_recovery")],
      [dup(9_000, 10_000), state(5_000, 5_000, "fast_recovery")],
      [dup(9_000, 10_000), state(5_000, 5_000, "fast_recovery")],
      [ack(9_000, 10_000, "recovered"), state(5_000, 5_000)]
    ]
  },
  {
    name: "after recovery, a new loss starts a new episode from the current flight",
    maxWindow: 40_000,
    steps: [
      [dup(10_000, 10_000), state(10_000, 20_000)],
      [dup(10_000, 10_000), state(10_000, 20_000)],
      [dup(10_000, 10_000, true), state(5_000, 5_000, "fast_recovery")],
      [ack(10_000, 10_000, "recovered"), state(5_000, 5_000)],
      [ack(1_000, 11_000), state(5_200, 5_000)],
      [dup(5_000, 16_000), state(5_200, 5_000)],
      [dup(5_000, 16_000), state(5_200, 5_000)],
      [dup(5_000, 16_000, true), state(2_500, 2_500, "fast_recovery")]
    ]
  },
  {
    name: "timeout: ssthresh = FlightSize/2, cwnd = 1 MSS; a repeated timeout holds ssthresh",
    maxWindow: 40_000,
    steps: [
      [timeout(10_000, 10_000), state(1_000, 5_000, "timeout_recovery")],
      [timeout(10_000, 10_000), state(1_000, 5_000, "timeout_recovery")]
    ]
  },
  {
    name: "timeout recovery slow-starts and ends at the recovery point",
    maxWindow: 40_000,
    steps: [
      [timeout(10_000, 10_000), state(1_000, 5_000, "timeout_recovery")],
      [ack(1_000, 1_000, "partial"), state(2_000, 5_000, "timeout_recovery")],
      [ack(2_000, 3_000, "partial"), state(4_000, 5_000, "timeout_recovery")],
      [ack(7_000, 10_000, "recovered"), state(6_000, 5_000)]
    ]
  },
  {
    name: "duplicate ACKs during timeout recovery never start a fast recovery",
    maxWindow: 40_000,
    steps: [
      [timeout(10_000, 10_000), state(1_000, 5_000, "timeout_recovery")],
      [dup(10_000, 10_000), state(1_000, 5_000, "timeout_recovery")],
      [dup(10_000, 10_000), state(1_000, 5_000, "timeout_recovery")],
      [dup(10_000, 10_000), state(1_000, 5_000, "timeout_recovery")],
      [dup(10_000, 10_000), state(1_000, 5_000, "timeout_recovery")]
    ]
  },
  {
    name: "a timeout during fast recovery moves to timeout recovery",
    maxWindow: 40_000,
    steps: [
      [dup(10_000, 10_000), state(10_000, 20_000)],
      [dup(10_000, 10_000), state(10_000, 20_000)],
      [dup(10_000, 10_000, true), state(5_000, 5_000, "fast_recovery")],
      [timeout(8_000, 10_000), state(1_000, 4_000, "timeout_recovery")]
    ]
  }
]

const apply = (cc: CongestionControl, op: Op): unknown => {
  if ("ack" in op) return cc.onNewAck(op.ack, op.to)
  if ("dup" in op) return cc.onDuplicateAck(op.flight, op.nxt)
  cc.onTimeout(op.flight, op.nxt)
  return undefined
}

describe("CongestionControl", () => {
  it("starts with 10 segments, ssthresh half the 4 MiB maximum, open", () => {
    const cc = new CongestionControl(4096)
    expect(cc.cwnd).toBe(INITIAL_WINDOW_SEGMENTS * 4096)
    expect(cc.ssthresh).toBe(MAX_CWND_BYTES / 2)
    expect(cc.phase).toBe("open")
  })

  for (const row of rows) {
    it(row.name, () => {
      const cc = new CongestionControl(MSS, row.maxWindow === undefined ? {} : { maxWindow: row.maxWindow })
      row.steps.forEach(([op, expected], index) => {
        const result = apply(cc, op)
        if ("ack" in op) expect(result, `step ${index}`).toBe(op.effect)
        if ("dup" in op) expect(result, `step ${index}`).toBe(op.starts)
        expect({ cwnd: cc.cwnd, ssthresh: cc.ssthresh, phase: cc.phase }, `step ${index}`).toEqual(expected)
      })
    })
  }

  it("remembers snd.nxt at the start of an episode as the recovery point", () => {
    const cc = new CongestionControl(MSS)
    cc.onDuplicateAck(8_000, 1234)
    cc.onDuplicateAck(8_000, 1234)
    cc.onDuplicateAck(8_000, 1234)
    expect(cc.recoveryPoint).toBe(1234)
    expect(cc.onNewAck(1_000, 1233)).toBe("partial")
    expect(cc.onNewAck(1, 1234)).toBe("recovered")
  })

  it("compares the recovery point in sequence space, across the 2^32 wrap", () => {
    const cc = new CongestionControl(MSS)
    cc.onTimeout(8_000, 5) // snd.nxt wrapped past 0
    expect(cc.onNewAck(1_000, 0xfffffff0)).toBe("partial")
    expect(cc.onNewAck(21, 5)).toBe("recovered")
  })

  it("keeps cwnd within [1 MSS, max] and ssthresh ≥ 2·MSS under any event sequence", () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant("ack" as const), bytes: fc.integer({ min: 1, max: 50_000 }) }),
      fc.record({ kind: fc.constant("dup" as const), flight: fc.integer({ min: 0, max: 200_000 }) }),
      fc.record({ kind: fc.constant("timeout" as const), flight: fc.integer({ min: 0, max: 200_000 }) })
    )
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        const cc = new CongestionControl(MSS, { maxWindow: 100_000 })
        let nxt = 0
        for (const o of ops) {
          nxt += 1_000
          if (o.kind === "ack") cc.onNewAck(o.bytes, nxt)
          else if (o.kind === "dup") cc.onDuplicateAck(o.flight, nxt)
          else cc.onTimeout(o.flight, nxt)
          if (cc.cwnd < MSS || cc.cwnd > 100_000 || cc.ssthresh < 2 * MSS) return false
        }
        return true
      }),
      { numRuns: 300 }
    )
  })
})

import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { PacketFlag, seqAdd } from "../../src/protocol/packet.ts"
import { DUP_THRESHOLD, RetransmitQueue } from "../../src/transport/retransmit-queue.ts"
import { bytes } from "./stream-fixtures.ts"

const SIZE = 100

/** A queue holding `count` data segments of SIZE bytes from `start`, sent at t = 0. */
const filled = (count: number, start = 1) => {
  const queue = new RetransmitQueue()
  for (let i = 0; i < count; i++) queue.push(seqAdd(start, i * SIZE), bytes(SIZE, i), 0, SIZE, 0)
  return queue
}
const seqOf = (i: number, start = 1) => seqAdd(start, i * SIZE)
const block = (from: number, to: number, start = 1) => ({ left: seqOf(from, start), right: seqOf(to, start) })

describe("RetransmitQueue", () => {
  it("counts outstanding sequence space and pipe as segments are sent and acknowledged", () => {
    const queue = filled(5)
    queue.push(seqOf(5), new Uint8Array(0), PacketFlag.FIN, 1, 0)
    expect([queue.size, queue.outstanding, queue.pipe]).toEqual([6, 501, 501])
    const outcome = queue.acknowledge(seqOf(2))
    expect(outcome.ackedLength).toBe(200)
    expect(outcome.rttCandidate?.seq).toBe(seqOf(1))
    expect([queue.size, queue.outstanding, queue.pipe]).toEqual([4, 301, 301])
    queue.acknowledge(seqOf(5) + 1)
    expect([queue.size, queue.outstanding, queue.pipe, queue.isEmpty]).toEqual([0, 0, 0, true])
  })

  it("trims a segment that an ACK cuts in the middle", () => {
    const queue = filled(2)
    const outcome = queue.acknowledge(seqOf(0) + 30)
    expect(outcome).toEqual({ ackedLength: 30, rttCandidate: undefined })
    expect(queue.head?.seq).toBe(seqOf(0) + 30)
    expect(queue.head?.payload.byteLength).toBe(70)
    expect(queue.outstanding).toBe(170)
  })

  it("marks only segments a block covers entirely as SACKed, and takes them out of the pipe", () => {
    const queue = filled(6)
    expect(queue.applySack([{ left: seqOf(1) + 50, right: seqOf(4) }])).toBe(2) // segments 2 and 3
    expect(queue.pipe).toBe(400)
    expect(queue.applySack([block(2, 4)])).toBe(0) // already marked
  })

  it(`presumes a segment lost once ${DUP_THRESHOLD} SACKed segments lie above it (RFC 6675 IsLost)`, () => {
    const queue = filled(8)
    queue.applySack([block(2, 4)])
    expect(queue.markLostBySack()).toBe(false)
    expect(queue.nextLost()).toBeUndefined()
    queue.applySack([block(6, 7)])
    expect(queue.markLostBySack()).toBe(true) // segments 0 and 1 now have 3 SACKed above
    expect(queue.nextLost()?.seq).toBe(seqOf(0))
    // pipe: 8 segments − 3 SACKed − 2 lost.
    expect(queue.pipe).toBe(300)
  })

  it("hands out lost segments in order, each once, and counts a retransmission back into the pipe", () => {
    const queue = filled(8)
    queue.applySack([block(2, 5)])
    queue.markLostBySack()
    const first = queue.nextLost()
    expect(first?.seq).toBe(seqOf(0))
    queue.noteRetransmit(first!, 10, false)
    expect(queue.nextLost()?.seq).toBe(seqOf(1))
    queue.noteRetransmit(queue.nextLost()!, 10, false)
    expect(queue.nextLost()).toBeUndefined()
    expect(queue.pipe).toBe(500) // 0, 1 retransmitted + 5, 6, 7 in flight
    expect(first?.transmissions).toBe(2)
    expect(first?.timeoutRetransmits).toBe(0)
  })

  it("after a timeout forgets every SACK (the receiver may have reneged) and presumes everything lost", () => {
    const queue = filled(5)
    queue.applySack([block(2, 4)])
    queue.markAllLost()
    expect(queue.pipe).toBe(0)
    const lost: Array<number> = []
    for (let s = queue.nextLost(); s !== undefined; s = queue.nextLost()) {
      lost.push(s.seq)
      queue.noteRetransmit(s, 5, lost.length === 1)
    }
    expect(lost).toEqual([0, 1, 2, 3, 4].map((i) => seqOf(i)))
    expect(queue.head?.timeoutRetransmits).toBe(1)
    expect(queue.pipe).toBe(500)
  })

  it("NewReno: marks the head lost on demand", () => {
    const queue = filled(3)
    queue.markHeadLost()
    expect(queue.nextLost()?.seq).toBe(seqOf(0))
    expect(queue.pipe).toBe(200)
  })

  it("offers no RTT candidate when the ACK covers a retransmitted or SACKed segment (Karn over the range)", () => {
    const retransmitted = filled(3)
    retransmitted.noteRetransmit(retransmitted.head!, 1, true)
    expect(retransmitted.acknowledge(seqOf(3)).rttCandidate).toBeUndefined()
    const sacked = filled(3)
    sacked.applySack([block(1, 2)])
    expect(sacked.acknowledge(seqOf(3)).rttCandidate).toBeUndefined()
    const clean = filled(3)
    expect(clean.acknowledge(seqOf(3)).rttCandidate?.seq).toBe(seqOf(2))
  })

  it("works across the sequence-number wrap", () => {
    const start = 0xffffff00
    const queue = filled(6, start)
    queue.applySack([block(3, 6, start)])
    expect(queue.markLostBySack()).toBe(true)
    expect(queue.nextLost()?.seq).toBe(start)
    queue.acknowledge(seqOf(6, start))
    expect(queue.isEmpty).toBe(true)
  })

  it("keeps the pipe consistent with its definition under any sequence of events", () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant("send" as const) }),
      fc.record({ kind: fc.constant("ack" as const), upTo: fc.integer({ min: 0, max: 40 }) }),
      fc.record({ kind: fc.constant("sack" as const), from: fc.integer({ min: 0, max: 40 }), len: fc.integer({ min: 1, max: 6 }) }),
      fc.record({ kind: fc.constant("retransmit" as const) }),
      fc.record({ kind: fc.constant("timeout" as const) }),
      fc.record({ kind: fc.constant("headLost" as const) })
    )
    fc.assert(
      fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
        const queue = new RetransmitQueue()
        let sent = 0
        let acked = 0
        for (const o of ops) {
          if (o.kind === "send") queue.push(seqOf(sent++), new Uint8Array(SIZE), 0, SIZE, 0)
          else if (o.kind === "ack" && o.upTo > acked && o.upTo <= sent) {
            queue.acknowledge(seqOf(o.upTo))
            acked = o.upTo
          } else if (o.kind === "sack" && o.from > acked && o.from + o.len <= sent) {
            queue.applySack([block(o.from, o.from + o.len)])
            queue.markLostBySack()
          } else if (o.kind === "retransmit") {
            const lost = queue.nextLost()
            if (lost !== undefined) queue.noteRetransmit(lost, 1, false)
          } else if (o.kind === "timeout") queue.markAllLost()
          else if (o.kind === "headLost") queue.markHeadLost()
          expect(queue.outstanding).toBe((sent - acked) * SIZE)
          expect(queue.pipe).toBeGreaterThanOrEqual(0)
          expect(queue.pipe).toBeLessThanOrEqual(2 * queue.outstanding)
        }
        // Acknowledging everything empties both counts exactly.
        queue.acknowledge(seqOf(sent))
        expect([queue.pipe, queue.outstanding, queue.size]).toEqual([0, 0, 0])
      }),
      { numRuns: 300 }
    )
  })
})

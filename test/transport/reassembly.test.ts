import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { seqAdd } from "../../src/protocol/packet.ts"
import { OUT_OF_ORDER_CAPACITY, Reassembly, RECEIVE_BUFFER_BYTES } from "../../src/transport/reassembly.ts"
import { WINDOW_UNIT_BYTES } from "../../src/transport/segment.ts"
import { bytes, concat } from "./stream-fixtures.ts"

const BASE = 1000
const STREAM = bytes(64, 3)
const piece = (from: number, to: number) => STREAM.subarray(from, to)

/** Feeds `[from, to)` of STREAM (offsets from BASE); returns the verdict and what was delivered. */
const feed = (r: Reassembly, from: number, to: number, fin = false) => {
  const delivered: Array<Uint8Array> = []
  const verdict = r.receive(BASE + from, piece(from, to), fin, delivered)
  return { verdict, delivered: Array.from(concat(delivered)) }
}

describe("Reassembly", () => {
  it("delivers in-order data at once and advances the cumulative ACK", () => {
    const r = new Reassembly(BASE)
    expect(feed(r, 0, 10)).toEqual({ verdict: "in_order", delivered: Array.from(piece(0, 10)) })
    expect(r.next).toBe(BASE + 10)
  })

  it("holds data beyond a gap and releases it, in order, when the gap fills", () => {
    const r = new Reassembly(BASE)
    expect(feed(r, 20, 30)).toEqual({ verdict: "out_of_order", delivered: [] })
    expect(feed(r, 10, 20)).toEqual({ verdict: "out_of_order", delivered: [] })
    expect(r.heldSegments).toBe(2)
    expect(feed(r, 0, 10)).toEqual({ verdict: "gap_filled", delivered: Array.from(piece(0, 30)) })
    expect(r.next).toBe(BASE + 30)
    expect(r.heldSegments).toBe(0)
  })

  it("ignores duplicates, old or held", () => {
    const r = new Reassembly(BASE)
    feed(r, 0, 10)
    feed(r, 20, 30)
    expect(feed(r, 0, 10).verdict).toBe("duplicate")
    expect(feed(r, 3, 7).verdict).toBe("duplicate")
    expect(feed(r, 20, 30).verdict).toBe("duplicate")
    expect(feed(r, 22, 25).verdict).toBe("duplicate")
    expect(r.heldBytes).toBe(10)
  })

  it("trims overlaps so that every byte is delivered once", () => {
    const r = new Reassembly(BASE)
    feed(r, 10, 20)
    feed(r, 30, 40)
    expect(feed(r, 15, 35).verdict).toBe("out_of_order") // only [20, 30) is new
    expect(r.heldBytes).toBe(30)
    expect(feed(r, 5, 45).verdict).toBe("out_of_order") // covers everything held, adds both ends
    expect(r.heldSegments).toBe(1)
    expect(feed(r, 0, 12)).toEqual({ verdict: "gap_filled", delivered: Array.from(piece(0, 45)) })
  })

  it("holds an early FIN until every byte before it has arrived", () => {
    const r = new Reassembly(BASE)
    feed(r, 0, 10)
    expect(feed(r, 20, 20, true).verdict).toBe("out_of_order")
    expect(r.finReceived).toBe(false)
    feed(r, 10, 15)
    expect(r.finReceived).toBe(false)
    expect(feed(r, 15, 20).delivered).toEqual(Array.from(piece(15, 20)))
    expect(r.finReceived).toBe(true)
    expect(r.next).toBe(BASE + 21) // the FIN takes one sequence number
  })

  it("ignores data beyond the FIN and everything after the stream ended", () => {
    const r = new Reassembly(BASE)
    expect(feed(r, 0, 5, true).verdict).toBe("in_order")
    expect(feed(r, 5, 10).verdict).toBe("duplicate")
    const late = new Reassembly(BASE)
    feed(late, 10, 10, true)
    expect(feed(late, 5, 20).delivered).toEqual([])
    expect(late.heldBytes).toBe(5) // [5, 10): the part before the FIN
  })

  it("reports SACK blocks: the most recent first, then the lowest, at most four, adjacent ranges merged", () => {
    const r = new Reassembly(BASE)
    for (const [from, to] of [[10, 12], [12, 14], [20, 22], [30, 32], [40, 42], [50, 52]] as const) feed(r, from, to)
    feed(r, 40, 42) // a duplicate does not change which block is the most recent
    const blocks = r.sackBlocks().map((b) => [b.left - BASE, b.right - BASE])
    expect(blocks).toEqual([[50, 52], [10, 14], [20, 22], [30, 32]])
    feed(r, 24, 26)
    expect(r.sackBlocks().map((b) => [b.left - BASE, b.right - BASE])).toEqual([[24, 26], [10, 14], [20, 22], [30, 32]])
    expect(new Reassembly(BASE).sackBlocks()).toEqual([])
  })

  it("advertises the free buffer in 4 KiB units and refuses data past one unit beyond it", () => {
    const r = new Reassembly(BASE, { bufferBytes: 2 * WINDOW_UNIT_BYTES })
    expect(r.windowUnits).toBe(2)
    const out: Array<Uint8Array> = []
    expect(r.receive(BASE, new Uint8Array(WINDOW_UNIT_BYTES + 100), false, out)).toBe("in_order")
    expect(r.windowUnits).toBe(0) // 100 bytes short of a whole unit is no unit
    // Room left: 2 units + 1 unit of slack − what is unread.
    const limit = 3 * WINDOW_UNIT_BYTES - (WINDOW_UNIT_BYTES + 100)
    expect(r.receive(r.next + limit, new Uint8Array(1), false, out)).toBe("refused")
    expect(r.receive(r.next, new Uint8Array(limit + 50), false, out)).toBe("in_order")
    expect(r.unreadBytes).toBe(3 * WINDOW_UNIT_BYTES) // trimmed at the limit
    r.consume(3 * WINDOW_UNIT_BYTES)
    expect(r.windowUnits).toBe(2)
  })

  it("refuses new out-of-order ranges when the buffer holds its capacity, but still accepts in-order data", () => {
    const r = new Reassembly(BASE, { outOfOrderCapacity: 2 })
    feed(r, 10, 12)
    feed(r, 20, 22)
    expect(feed(r, 30, 32).verdict).toBe("refused")
    expect(feed(r, 0, 10).verdict).toBe("gap_filled")
    expect(feed(r, 30, 32).verdict).toBe("out_of_order")
  })

  it("defaults to a 1024-segment out-of-order buffer: a full window of 4 KiB segments", () => {
    expect(OUT_OF_ORDER_CAPACITY * WINDOW_UNIT_BYTES).toBe(RECEIVE_BUFFER_BYTES)
    expect(new Reassembly(0).windowUnits).toBe(OUT_OF_ORDER_CAPACITY)
  })

  it("delivers any segmentation of a stream, in any order, duplicated and overlapping, exactly once", () => {
    const scenario = fc.record({
      length: fc.integer({ min: 1, max: 3000 }),
      start: fc.oneof(fc.constant(0xfffff000), fc.integer({ min: 0, max: 0xffffffff })),
      cuts: fc.array(fc.integer({ min: 1, max: 2999 }), { maxLength: 40 }),
      extra: fc.array(fc.tuple(fc.integer({ min: 0, max: 2999 }), fc.integer({ min: 1, max: 400 })), { maxLength: 20 }),
      order: fc.array(fc.nat(), { maxLength: 80 })
    })
    fc.assert(
      fc.property(scenario, ({ length, start, cuts, extra, order }) => {
        const stream = bytes(length, 9)
        const points = [...new Set([0, length, ...cuts.filter((c) => c < length)])].sort((x, y) => x - y)
        const ranges: Array<readonly [number, number]> = []
        for (let i = 0; i + 1 < points.length; i++) ranges.push([points[i] as number, points[i + 1] as number])
        for (const [from, size] of extra) if (from < length) ranges.push([from, Math.min(length, from + size)])
        // A deterministic shuffle driven by `order`.
        for (let i = ranges.length - 1; i > 0; i--) {
          const j = (order[i % Math.max(1, order.length)] ?? 0) % (i + 1)
          ;[ranges[i], ranges[j]] = [ranges[j] as readonly [number, number], ranges[i] as readonly [number, number]]
        }
        const r = new Reassembly(start, { outOfOrderCapacity: 1024 })
        const delivered: Array<Uint8Array> = []
        for (const [from, to] of ranges) {
          r.receive(seqAdd(start, from), stream.subarray(from, to), to === length, delivered)
          expect(r.heldSegments).toBeLessThanOrEqual(1024)
        }
        expect(Buffer.from(concat(delivered)).equals(Buffer.from(stream))).toBe(true)
        expect(r.next).toBe(seqAdd(start, length + 1))
        expect(r.finReceived).toBe(true)
        expect(r.heldSegments).toBe(0)
      }),
      { numRuns: 300 }
    )
  })
})

import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import { PacketFlag } from "../../src/protocol/packet.ts"
import {
  decodeSack,
  encodeSack,
  MAX_SACK_BLOCKS,
  mustSendFirstByteAlone,
  type SackBlock,
  sackBlocksOf,
  sackOptionLength
} from "../../src/transport/sack.ts"
import { ascii, concat, segment } from "./stream-fixtures.ts"

const { ACK, FIN } = PacketFlag
const u32 = fc.integer({ min: 0, max: 0xffffffff })
const block = fc.record({ left: u32, right: u32 })

/** The Go daemon's DecodeSACK: any payload that *starts* with a decodable option is SACK (reference §8.4). */
const goDecodes = (payload: Uint8Array): boolean => {
  if (payload.byteLength < 5 || payload[0] !== 0x53 || payload[1] !== 0x41 || payload[2] !== 0x43 || payload[3] !== 0x4b) {
    return false
  }
  const count = payload[4] as number
  return count >= 1 && count <= 4 && payload.byteLength >= 5 + 8 * count
}

describe("SACK option wire format", () => {
  it("encodes SACK ‖ count ‖ (left, right) big-endian", () => {
    const wire = encodeSack([{ left: 0x01020304, right: 0x05060708 }])
    expect(Buffer.from(wire).toString("hex")).toBe("5341434b" + "01" + "01020304" + "05060708")
  })

  it("round-trips 1 to 4 blocks", () => {
    fc.assert(
      fc.property(fc.array(block, { minLength: 1, maxLength: MAX_SACK_BLOCKS }), (blocks) => {
        const wire = encodeSack(blocks)
        expect(wire.byteLength).toBe(sackOptionLength(blocks.length))
        expect(Result.getOrThrow(decodeSack(wire))).toEqual(blocks)
      }),
      { numRuns: 200 }
    )
  })

  it("keeps only the first 4 blocks, and refuses to encode none", () => {
    const blocks = [1, 2, 3, 4, 5].map((i) => ({ left: i * 10, right: i * 10 + 5 }))
    expect(Result.getOrThrow(decodeSack(encodeSack(blocks)))).toEqual(blocks.slice(0, 4))
    expect(() => encodeSack([])).toThrow(RangeError)
  })

  const failures: ReadonlyArray<readonly [string, Uint8Array, string]> = [
    ["short", ascii("SACK"), "short"],
    ["wrong magic", concat([ascii("SACX"), new Uint8Array([1]), new Uint8Array(8)]), "bad_magic"],
    ["count 0", concat([ascii("SACK"), new Uint8Array([0])]), "invalid"],
    ["count 5", concat([ascii("SACK"), new Uint8Array([5]), new Uint8Array(40)]), "invalid"],
    ["missing block bytes", concat([ascii("SACK"), new Uint8Array([2]), new Uint8Array(8)]), "inconsistent"],
    ["trailing bytes", concat([ascii("SACK"), new Uint8Array([1]), new Uint8Array(9)]), "inconsistent"]
  ]
  for (const [name, payload, reason] of failures) {
    it(`rejects ${name} as decode_${reason}`, () => {
      const result = decodeSack(payload)
      expect(Result.isFailure(result) && result.failure.code).toBe(`decode_${reason}`)
    })
  }
})

describe("the pure-ACK rule (receiver side)", () => {
  const SND_NXT = 100_000
  const sackAck = (ack: number, blocks: ReadonlyArray<SackBlock>, flags: number = ACK) =>
    segment(flags, 7, ack, encodeSack(blocks))

  it("reads a pure ACK whose blocks lie between its ACK and our snd.nxt as SACK", () => {
    const blocks = [{ left: 60_000, right: 64_096 }, { left: 70_000, right: 74_096 }]
    expect(sackBlocksOf(sackAck(50_000, blocks), SND_NXT)).toEqual(blocks)
  })

  it("accepts a block that ends exactly at snd.nxt", () => {
    expect(sackBlocksOf(sackAck(50_000, [{ left: 90_000, right: SND_NXT }]), SND_NXT)).toBeDefined()
  })

  const notSack: ReadonlyArray<readonly [string, ReturnType<typeof sackAck>]> = [
    ["a block starting at or below the cumulative ACK", sackAck(50_000, [{ left: 50_000, right: 54_096 }])],
    ["a block beyond what we sent", sackAck(50_000, [{ left: 96_000, right: SND_NXT + 1 }])],
    ["an empty or inverted block", sackAck(50_000, [{ left: 60_000, right: 60_000 }])],
    ["one implausible block among good ones", sackAck(50_000, [{ left: 60_000, right: 61_000 }, { left: 1, right: 2 }])],
    ["a FIN|ACK carrying the bytes", sackAck(50_000, [{ left: 60_000, right: 61_000 }], ACK | FIN)],
    ["a segment without ACK", sackAck(50_000, [{ left: 60_000, right: 61_000 }], 0)],
    ["a payload with bytes after the option", segment(ACK, 7, 50_000, concat([encodeSack([{ left: 60_000, right: 61_000 }]), ascii("x")]))]
  ]
  for (const [name, candidate] of notSack) {
    it(`treats ${name} as data`, () => {
      expect(sackBlocksOf(candidate, SND_NXT)).toBeUndefined()
    })
  }

  it("works across the sequence-number wrap", () => {
    const blocks = [{ left: 0xfffffff0, right: 0x10 }]
    expect(sackBlocksOf(sackAck(0xffffff00, blocks), 0x20)).toEqual(blocks)
  })
})

describe("the sender rule: no data payload ever reads as SACK", () => {
  const sackLike = fc.tuple(fc.integer({ min: 1, max: 4 }), fc.uint8Array({ maxLength: 60 })).map(([count, tail]) =>
    concat([ascii("SACK"), new Uint8Array([count]), tail])
  )

  it("flags exactly the payloads the Go decoder would take for SACK", () => {
    fc.assert(
      fc.property(fc.oneof(sackLike, fc.uint8Array({ maxLength: 60 })), (payload) => {
        expect(mustSendFirstByteAlone(payload, payload.byteLength)).toBe(goDecodes(payload))
      }),
      { numRuns: 500 }
    )
  })

  it("a 1-byte first segment and the rest after it are both plain data to every decoder", () => {
    fc.assert(
      fc.property(sackLike.filter((p) => mustSendFirstByteAlone(p, p.byteLength)), (payload) => {
        const first = payload.subarray(0, 1)
        const rest = payload.subarray(1)
        expect(goDecodes(first)).toBe(false)
        expect(goDecodes(rest)).toBe(false) // "ACK…" no longer starts with the magic
        expect(mustSendFirstByteAlone(rest, rest.byteLength)).toBe(false)
      }),
      { numRuns: 200 }
    )
  })

  it("looks at the segment's length, not only at the head bytes", () => {
    const head = concat([ascii("SACK"), new Uint8Array([2])])
    expect(mustSendFirstByteAlone(head, sackOptionLength(2) - 1)).toBe(false)
    expect(mustSendFirstByteAlone(head, sackOptionLength(2))).toBe(true)
  })
})

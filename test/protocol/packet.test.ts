import { crc32 } from "node:zlib"
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { parseAddr } from "../../src/protocol/address.ts"
import {
  decodePacket,
  encodePacket,
  HEADER_BYTES,
  MAX_PAYLOAD_BYTES,
  type Packet,
  PacketFlag,
  Protocol,
  seqAdd,
  seqDiff,
  seqGt,
  seqLe,
  seqLt,
  writePacket
} from "../../src/protocol/packet.ts"
import { arbPacket, failure, fromHex, hex, isWellFormedOutcome, mutatedFrom, ok, u32 } from "./arbitraries.ts"

const example: Packet = {
  flags: PacketFlag.SYN | PacketFlag.ACK,
  protocol: Protocol.Stream,
  src: ok(parseAddr("0:0000.0000.0005")),
  dst: ok(parseAddr("1:0001.0000.0007")),
  srcPort: 49152,
  dstPort: 7,
  seq: 0x01020304,
  ack: 0xfffffffe,
  window: 16,
  payload: new TextEncoder().encode("hi")
}

// Everything but the checksum, laid out by hand from reference §3.1.
const exampleHeaderHex =
  "13" + // version 1, flags SYN|ACK
  "01" + // Stream
  "0002" + // payload length
  "000000000005" + // 0:0000.0000.0005
  "000100000007" + // 1:0001.0000.0007
  "c000" + // source port 49152
  "0007" + // destination port 7
  "01020304" + // seq
  "fffffffe" + // ack
  "0010" // window

const withByte = (bytes: Uint8Array, index: number, value: number): Uint8Array => {
  const out = bytes.slice()
  out[index] = value
  return out
}

describe("packet layout", () => {
  it("writes the example header field by field, with a CRC-32 over header-with-zeroed-checksum ‖ payload", () => {
    const bytes = encodePacket(example)
    expect(bytes.byteLength).toBe(HEADER_BYTES + 2)
    expect(hex(bytes.subarray(0, 30))).toBe(exampleHeaderHex)
    expect(hex(bytes.subarray(34))).toBe("6869")
    const expectedCrc = crc32(Buffer.concat([fromHex(exampleHeaderHex), new Uint8Array(4), fromHex("6869")]))
    expect(new DataView(bytes.buffer).getUint32(30)).toBe(expectedCrc)
  })

  it("encodes 0:0000.0000.0005 as the six bytes 00 00 00 00 00 05", () => {
    expect(hex(encodePacket(example).subarray(4, 10))).toBe("000000000005")
  })

  it("decodes the example back, payload as a zero-copy view of the input", () => {
    const bytes = encodePacket(example)
    const decoded = ok(decodePacket(bytes))
    expect(decoded).toEqual(example)
    expect(decoded.payload.buffer).toBe(bytes.buffer)
  })

  it("writes at an offset inside a larger buffer", () => {
    const target = new Uint8Array(10 + HEADER_BYTES + 2).fill(0xaa)
    writePacket(target, 10, example)
    expect(hex(target.subarray(0, 10))).toBe("aa".repeat(10))
    expect(target.subarray(10)).toEqual(encodePacket(example))
  })
})

describe("decodePacket failures", () => {
  const valid = encodePacket(example)

  it("short: fewer than 34 bytes", () => {
    expect(failure(decodePacket(valid.subarray(0, 33))).reason).toBe("short")
    expect(failure(decodePacket(new Uint8Array(0))).reason).toBe("short")
  })

  it("invalid: version other than 1", () => {
    expect(failure(decodePacket(withByte(valid, 0, 0x23))).reason).toBe("invalid")
    expect(failure(decodePacket(withByte(valid, 0, 0x03))).reason).toBe("invalid")
  })

  it("invalid: unknown protocol", () => {
    expect(failure(decodePacket(withByte(valid, 1, 0x04))).reason).toBe("invalid")
    expect(failure(decodePacket(withByte(valid, 1, 0x00))).reason).toBe("invalid")
  })

  it("inconsistent: payload length field disagrees with the bytes present, either way", () => {
    expect(failure(decodePacket(valid.subarray(0, valid.byteLength - 1))).reason).toBe("inconsistent")
    const longer = new Uint8Array(valid.byteLength + 1)
    longer.set(valid)
    expect(failure(decodePacket(longer)).reason).toBe("inconsistent")
  })

  it("bad_checksum: payload or checksum altered", () => {
    expect(failure(decodePacket(withByte(valid, 34, 0x00))).reason).toBe("bad_checksum")
    expect(failure(decodePacket(withByte(valid, 31, valid[31]! ^ 1))).reason).toBe("bad_checksum")
    expect(failure(decodePacket(withByte(valid, 0, 0x1f))).code).toBe("decode_bad_checksum")
  })

  it("does not modify its input while checking the CRC", () => {
    const copy = valid.slice()
    decodePacket(copy)
    expect(copy).toEqual(valid)
  })
})

describe("encodePacket preconditions", () => {
  const bad: ReadonlyArray<[string, Partial<Packet> & Record<string, unknown>]> = [
    ["payload over 65535 bytes", { payload: new Uint8Array(MAX_PAYLOAD_BYTES + 1) }],
    ["flags past 4 bits", { flags: 0x10 }],
    ["unknown protocol", { protocol: 4 as Protocol }],
    ["source port 65536", { srcPort: 65536 }],
    ["negative destination port", { dstPort: -1 }],
    ["seq 2^32", { seq: 2 ** 32 }],
    ["negative ack", { ack: -1 }],
    ["fractional window", { window: 1.5 }],
    ["network past 16 bits", { src: { network: 0x10000, node: 1 } }],
    ["node past 32 bits", { dst: { network: 0, node: 2 ** 32 } }]
  ]
  for (const [name, change] of bad) {
    it(`throws a RangeError: ${name}`, () => {
      expect(() => encodePacket({ ...example, ...change })).toThrow(RangeError)
    })
  }

  it("accepts the extremes of every field", () => {
    const max: Packet = {
      ...example,
      flags: 0xf,
      src: { network: 0xffff, node: 0xffffffff },
      srcPort: 0xffff,
      seq: 0xffffffff,
      ack: 0xffffffff,
      window: 0xffff,
      payload: new Uint8Array(MAX_PAYLOAD_BYTES)
    }
    expect(ok(decodePacket(encodePacket(max)))).toEqual(max)
  })

  it("throws when the target buffer has no room", () => {
    expect(() => writePacket(new Uint8Array(HEADER_BYTES + 1), 0, example)).toThrow(RangeError)
  })
})

describe("packet properties", () => {
  it("decode(encode(p)) equals p", () => {
    fc.assert(
      fc.property(arbPacket(), (p) => {
        expect(ok(decodePacket(encodePacket(p)))).toEqual(p)
      }),
      { numRuns: 300 }
    )
  })

  it("a single flipped bit anywhere (header or payload) makes decoding fail", () => {
    fc.assert(
      fc.property(arbPacket(256), fc.nat(), (p, bitSeed) => {
        const bytes = encodePacket(p)
        const bit = bitSeed % (bytes.byteLength * 8)
        bytes[bit >>> 3]! ^= 1 << (bit & 7)
        expect(isWellFormedOutcome(decodePacket(bytes))).toBe(true)
        failure(decodePacket(bytes))
      }),
      { numRuns: 1000 }
    )
  })

  it("never throws on random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200, size: "max" }), (bytes) => {
        expect(isWellFormedOutcome(decodePacket(bytes))).toBe(true)
      }),
      { numRuns: 500 }
    )
  })

  it("never throws on truncated, extended or flipped valid packets", () => {
    fc.assert(
      fc.property(mutatedFrom(arbPacket(128).map(encodePacket)), (bytes) => {
        expect(isWellFormedOutcome(decodePacket(bytes))).toBe(true)
      }),
      { numRuns: 500 }
    )
  })
})

describe("RFC 1982 sequence comparison", () => {
  it("wraps around 2^32", () => {
    expect(seqLt(0xffffffff, 0)).toBe(true)
    expect(seqGt(0, 0xffffffff)).toBe(true)
    expect(seqDiff(1, 0xffffffff)).toBe(2)
    expect(seqDiff(0xffffffff, 1)).toBe(-2)
    expect(seqAdd(0xffffffff, 2)).toBe(1)
  })

  it("is reflexive for ≤ and irreflexive for < and >", () => {
    fc.assert(
      fc.property(u32, (a) => {
        expect([seqLe(a, a), seqLt(a, a), seqGt(a, a), seqDiff(a, a)]).toEqual([true, false, false, 0])
      }),
      { numRuns: 200 }
    )
  })

  it("orders a before a + d for any 0 < d < 2^31, across the wrap", () => {
    fc.assert(
      fc.property(u32, fc.integer({ min: 1, max: 2 ** 31 - 1 }), (a, d) => {
        const b = seqAdd(a, d)
        expect(seqLt(a, b)).toBe(true)
        expect(seqLe(a, b)).toBe(true)
        expect(seqGt(b, a)).toBe(true)
        expect(seqLt(b, a)).toBe(false)
        expect(seqDiff(b, a)).toBe(d)
        expect(seqDiff(a, b)).toBe(-d)
      }),
      { numRuns: 500 }
    )
  })
})

import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { encodePacket, type Packet, Protocol } from "../../src/protocol/packet.ts"
import {
  AUTH_KEY_EXCHANGE_FRAME_BYTES,
  classifyDatagram,
  decodeTunnelFrame,
  encodeAuthKeyExchangeFrame,
  encodeEncryptedFrame,
  encodeFragmentFrame,
  encodeKeyExchangeFrame,
  encodePlainFrame,
  encodePunchFrame,
  encodeTunnelFrame,
  FRAGMENT_HEADER_BYTES,
  KEY_EXCHANGE_FRAME_BYTES,
  MAX_FRAGMENT_CHUNK_BYTES,
  MIN_ENCRYPTED_FRAME_BYTES,
  TunnelMagic
} from "../../src/protocol/tunnel-frame.ts"
import { arbTunnelFrame, failure, fromHex, hex, isWellFormedOutcome, mutatedFrom, ok } from "./arbitraries.ts"

const filled = (length: number, value: number): Uint8Array => new Uint8Array(length).fill(value)

const magicBytes = (magic: number): Uint8Array => {
  const out = new Uint8Array(4)
  new DataView(out.buffer).setUint32(0, magic)
  return out
}

const withLength = (bytes: Uint8Array, length: number): Uint8Array => {
  const out = new Uint8Array(length)
  out.set(bytes.subarray(0, length))
  return out
}

const packet: Packet = {
  flags: 0,
  protocol: Protocol.Datagram,
  src: { network: 0, node: 5 },
  dst: { network: 0, node: 6 },
  srcPort: 1000,
  dstPort: 1001,
  seq: 0,
  ack: 0,
  window: 0,
  payload: new Uint8Array([1, 2, 3])
}

describe("magics", () => {
  it("are the ASCII of their names", () => {
    for (const [name, magic] of Object.entries(TunnelMagic)) {
      expect(new TextDecoder().decode(magicBytes(magic))).toBe(name)
    }
  })
})

describe("classifyDatagram", () => {
  it("calls any first byte below 0x10 a beacon message", () => {
    expect(classifyDatagram(new Uint8Array([0x01, 0, 0, 0, 5]))).toBe("Beacon")
    expect(classifyDatagram(new Uint8Array([0x0f]))).toBe("Beacon")
    expect(classifyDatagram(new Uint8Array([0x00]))).toBe("Beacon")
  })

  it("names each magic and calls the rest unknown", () => {
    expect(classifyDatagram(encodePunchFrame())).toBe("Punch")
    expect(classifyDatagram(new TextEncoder().encode("PILSxxxx"))).toBe("Encrypted")
    expect(classifyDatagram(new TextEncoder().encode("PILX"))).toBe("Unknown")
    expect(classifyDatagram(new TextEncoder().encode("PIL"))).toBe("Unknown")
    expect(classifyDatagram(new Uint8Array([0x10, 0, 0, 0]))).toBe("Unknown")
    expect(classifyDatagram(new Uint8Array(0))).toBe("Unknown")
  })

  it("agrees with the decoder on every encoded frame", () => {
    fc.assert(
      fc.property(arbTunnelFrame, (frame) => {
        expect(classifyDatagram(encodeTunnelFrame(frame))).toBe(frame._tag)
      }),
      { numRuns: 200 }
    )
  })
})

describe("frame layouts", () => {
  it("PILT: magic then the packet bytes", () => {
    const bytes = encodePlainFrame({ packet })
    expect(hex(bytes.subarray(0, 4))).toBe("50494c54")
    expect(bytes.subarray(4)).toEqual(encodePacket(packet))
    expect(ok(decodeTunnelFrame(bytes))).toEqual({ _tag: "Plain", packet })
  })

  it("PILT: a corrupt inner packet fails with the packet's error", () => {
    const bytes = encodePlainFrame({ packet })
    bytes[bytes.byteLength - 1]! ^= 0xff
    expect(failure(decodeTunnelFrame(bytes)).reason).toBe("bad_checksum")
  })

  it("PILS: magic, sender, nonce, then ciphertext ‖ tag as views of the input", () => {
    const frame = { sender: 0x01020304, nonce: filled(12, 0xab), sealed: filled(20, 0xcd) }
    const bytes = encodeEncryptedFrame(frame)
    expect(hex(bytes)).toBe("50494c53" + "01020304" + "ab".repeat(12) + "cd".repeat(20))
    const decoded = ok(decodeTunnelFrame(bytes))
    expect(decoded).toEqual({ _tag: "Encrypted", ...frame })
    if (decoded._tag !== "Encrypted") throw new Error("unreachable")
    expect(decoded.sealed.buffer).toBe(bytes.buffer)
  })

  it("PILS: at least 32 bytes after the magic (an empty ciphertext is allowed)", () => {
    const minimal = encodeEncryptedFrame({ sender: 1, nonce: filled(12, 0), sealed: filled(16, 0) })
    expect(minimal.byteLength).toBe(MIN_ENCRYPTED_FRAME_BYTES)
    expect(ok(decodeTunnelFrame(minimal))._tag).toBe("Encrypted")
    expect(failure(decodeTunnelFrame(minimal.subarray(0, 35))).reason).toBe("short")
  })

  it("PILK: exactly 40 bytes", () => {
    const bytes = encodeKeyExchangeFrame({ node: 7, x25519: filled(32, 0x11) })
    expect(hex(bytes)).toBe("50494c4b" + "00000007" + "11".repeat(32))
    expect(ok(decodeTunnelFrame(bytes))).toEqual({ _tag: "KeyExchange", node: 7, x25519: filled(32, 0x11) })
    expect(failure(decodeTunnelFrame(bytes.subarray(0, KEY_EXCHANGE_FRAME_BYTES - 1))).reason).toBe("short")
    expect(failure(decodeTunnelFrame(withLength(bytes, KEY_EXCHANGE_FRAME_BYTES + 1))).reason).toBe("oversize")
  })

  it("PILA: exactly 136 bytes, keys and signature in order", () => {
    const frame = { node: 0xfffffffe, x25519: filled(32, 1), ed25519: filled(32, 2), signature: filled(64, 3) }
    const bytes = encodeAuthKeyExchangeFrame(frame)
    expect(hex(bytes)).toBe("50494c41" + "fffffffe" + "01".repeat(32) + "02".repeat(32) + "03".repeat(64))
    expect(ok(decodeTunnelFrame(bytes))).toEqual({ _tag: "AuthKeyExchange", ...frame })
    expect(failure(decodeTunnelFrame(bytes.subarray(0, AUTH_KEY_EXCHANGE_FRAME_BYTES - 1))).reason).toBe("short")
    expect(failure(decodeTunnelFrame(withLength(bytes, AUTH_KEY_EXCHANGE_FRAME_BYTES + 1))).reason).toBe("oversize")
  })

  it("PILP: the magic alone", () => {
    expect(hex(encodePunchFrame())).toBe("50494c50")
    expect(ok(decodeTunnelFrame(fromHex("50494c50")))).toEqual({ _tag: "Punch" })
    expect(failure(decodeTunnelFrame(fromHex("50494c5000"))).reason).toBe("oversize")
  })

  it("PILF: 14-byte header then the chunk", () => {
    const frame = { sender: 9, fragId: 0xdeadbeef, index: 2, count: 5, chunk: filled(3, 0x77) }
    const bytes = encodeFragmentFrame(frame)
    expect(hex(bytes)).toBe("50494c46" + "00000009" + "deadbeef" + "02" + "05" + "777777")
    expect(ok(decodeTunnelFrame(bytes))).toEqual({ _tag: "Fragment", ...frame })
  })

  it("PILF: header-only is an empty chunk; shorter is short", () => {
    const header = encodeFragmentFrame({ sender: 1, fragId: 1, index: 0, count: 1, chunk: new Uint8Array(0) })
    expect(header.byteLength).toBe(FRAGMENT_HEADER_BYTES)
    expect(ok(decodeTunnelFrame(header))).toMatchObject({ _tag: "Fragment", chunk: new Uint8Array(0) })
    expect(failure(decodeTunnelFrame(header.subarray(0, FRAGMENT_HEADER_BYTES - 1))).reason).toBe("short")
  })

  it("PILF: enforces count 1-64, index below count, chunk at most 1209 bytes", () => {
    const header = (index: number, count: number, chunkLength = 1): Uint8Array => {
      const bytes = new Uint8Array(FRAGMENT_HEADER_BYTES + chunkLength)
      bytes.set(fromHex("50494c46" + "00000001" + "00000001"))
      bytes[12] = index
      bytes[13] = count
      return bytes
    }
    expect(failure(decodeTunnelFrame(header(0, 0))).reason).toBe("invalid")
    expect(failure(decodeTunnelFrame(header(0, 65))).reason).toBe("invalid")
    expect(ok(decodeTunnelFrame(header(63, 64)))._tag).toBe("Fragment")
    expect(failure(decodeTunnelFrame(header(3, 3))).reason).toBe("inconsistent")
    expect(ok(decodeTunnelFrame(header(0, 1, MAX_FRAGMENT_CHUNK_BYTES)))._tag).toBe("Fragment")
    expect(failure(decodeTunnelFrame(header(0, 1, MAX_FRAGMENT_CHUNK_BYTES + 1))).reason).toBe("oversize")
  })

  it("unknown magic is bad_magic, fewer than 4 bytes is short", () => {
    expect(failure(decodeTunnelFrame(new TextEncoder().encode("PILXabcd"))).reason).toBe("bad_magic")
    expect(failure(decodeTunnelFrame(new Uint8Array([0x01, 0, 0, 0, 5]))).reason).toBe("bad_magic")
    expect(failure(decodeTunnelFrame(new TextEncoder().encode("PIL"))).reason).toBe("short")
  })
})

describe("encoder preconditions", () => {
  const cases: ReadonlyArray<[string, () => Uint8Array]> = [
    ["PILS nonce of 11 bytes", () => encodeEncryptedFrame({ sender: 1, nonce: filled(11, 0), sealed: filled(16, 0) })],
    ["PILS without room for the tag", () => encodeEncryptedFrame({ sender: 1, nonce: filled(12, 0), sealed: filled(15, 0) })],
    ["PILS sender past 32 bits", () => encodeEncryptedFrame({ sender: 2 ** 32, nonce: filled(12, 0), sealed: filled(16, 0) })],
    ["PILK key of 31 bytes", () => encodeKeyExchangeFrame({ node: 1, x25519: filled(31, 0) })],
    ["PILK negative node", () => encodeKeyExchangeFrame({ node: -1, x25519: filled(32, 0) })],
    [
      "PILA signature of 63 bytes",
      () => encodeAuthKeyExchangeFrame({ node: 1, x25519: filled(32, 0), ed25519: filled(32, 0), signature: filled(63, 0) })
    ],
    [
      "PILA Ed25519 key of 33 bytes",
      () => encodeAuthKeyExchangeFrame({ node: 1, x25519: filled(32, 0), ed25519: filled(33, 0), signature: filled(64, 0) })
    ],
    ["PILF count 0", () => encodeFragmentFrame({ sender: 1, fragId: 1, index: 0, count: 0, chunk: filled(1, 0) })],
    ["PILF count 65", () => encodeFragmentFrame({ sender: 1, fragId: 1, index: 0, count: 65, chunk: filled(1, 0) })],
    ["PILF index = count", () => encodeFragmentFrame({ sender: 1, fragId: 1, index: 2, count: 2, chunk: filled(1, 0) })],
    [
      "PILF chunk of 1210 bytes",
      () => encodeFragmentFrame({ sender: 1, fragId: 1, index: 0, count: 1, chunk: filled(MAX_FRAGMENT_CHUNK_BYTES + 1, 0) })
    ]
  ]
  for (const [name, encode] of cases) {
    it(`throws a RangeError: ${name}`, () => {
      expect(encode).toThrow(RangeError)
    })
  }
})

describe("tunnel frame properties", () => {
  it("decode(encode(frame)) equals frame, for every kind", () => {
    fc.assert(
      fc.property(arbTunnelFrame, (frame) => {
        expect(ok(decodeTunnelFrame(encodeTunnelFrame(frame)))).toEqual(frame)
      }),
      { numRuns: 600 }
    )
  })

  it("never throws on random bytes, with or without a valid magic in front", () => {
    const magic = fc.constantFrom(...Object.values(TunnelMagic)).map(magicBytes)
    const arbBytes = fc.oneof(
      fc.uint8Array({ maxLength: 200, size: "max" }),
      fc.tuple(magic, fc.uint8Array({ maxLength: 200, size: "max" })).map(([m, rest]) => {
        const out = new Uint8Array(m.byteLength + rest.byteLength)
        out.set(m)
        out.set(rest, m.byteLength)
        return out
      })
    )
    fc.assert(
      fc.property(arbBytes, (bytes) => {
        expect(isWellFormedOutcome(decodeTunnelFrame(bytes))).toBe(true)
        classifyDatagram(bytes)
      }),
      { numRuns: 1000 }
    )
  })

  it("never throws on truncated, extended or flipped valid frames", () => {
    fc.assert(
      fc.property(mutatedFrom(arbTunnelFrame.map(encodeTunnelFrame)), (bytes) => {
        expect(isWellFormedOutcome(decodeTunnelFrame(bytes))).toBe(true)
      }),
      { numRuns: 1000 }
    )
  })
})

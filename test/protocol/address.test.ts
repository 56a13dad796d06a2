import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import {
  BROADCAST_NODE,
  broadcastAddr,
  decodeAddr,
  encodeAddr,
  formatAddr,
  formatSocketAddr,
  isBroadcast,
  isZeroAddr,
  parseAddr,
  parseSocketAddr,
  ZERO_ADDR
} from "../../src/protocol/address.ts"

const arbAddr = fc.record({ network: fc.integer({ min: 0, max: 0xffff }), node: fc.integer({ min: 0, max: 0xffffffff }) })

const failureOf = <A>(r: Result.Result<A, { readonly reason: string }>) => (Result.isFailure(r) ? r.failure.reason : "ok")

describe("virtual addresses", () => {
  it("formats node 5 on the backbone and node 0xA3F29104 on network 1", () => {
    expect(formatAddr({ network: 0, node: 5 })).toBe("0:0000.0000.0005")
    expect(formatAddr({ network: 1, node: 0xa3f29104 })).toBe("1:0001.A3F2.9104")
    expect(formatAddr({ network: 65535, node: BROADCAST_NODE })).toBe("65535:FFFF.FFFF.FFFF")
  })

  it("is 6 bytes big-endian on the wire: network u16, node u32", () => {
    expect([...encodeAddr({ network: 0x0102, node: 0x03040506 })]).toEqual([1, 2, 3, 4, 5, 6])
    expect(Result.getOrThrow(decodeAddr(Uint8Array.from([0, 0, 0, 0, 0, 5])))).toEqual({ network: 0, node: 5 })
    expect(failureOf(decodeAddr(new Uint8Array(5)))).toBe("short")
    expect(failureOf(decodeAddr(new Uint8Array(7)))).toBe("oversize")
  })

  it("rejects a first group that does not repeat the network ID (the SPEC's own example is invalid)", () => {
    expect(failureOf(parseAddr("1:00A3.F291.0004"))).toBe("inconsistent")
    expect(Result.getOrThrow(parseAddr("1:0001.F291.0004"))).toEqual({ network: 1, node: 0xf2910004 })
  })

  it("accepts lower-case hex and rejects malformed text with a typed error", () => {
    expect(Result.getOrThrow(parseAddr("10:000a.beef.cafe"))).toEqual({ network: 10, node: 0xbeefcafe })
    for (const bad of ["", "0:0000.0000", "0:0000.0000.00005", "x:0000.0000.0005", "0.0000.0000.0005", "70000:11170.0000.0000", " 0:0000.0000.0005"]) {
      expect(failureOf(parseAddr(bad)), bad).not.toBe("ok")
    }
    expect(failureOf(parseAddr("65536:10000.0000.0000"))).not.toBe("ok")
  })

  it("names the special addresses", () => {
    expect(isZeroAddr(ZERO_ADDR)).toBe(true)
    expect(isBroadcast(broadcastAddr(7))).toBe(true)
    expect(formatAddr(broadcastAddr(0))).toBe("0:0000.FFFF.FFFF")
  })

  it("socket addresses append :port in decimal", () => {
    const s = { addr: { network: 0, node: 5 }, port: 1001 }
    expect(formatSocketAddr(s)).toBe("0:0000.0000.0005:1001")
    expect(Result.getOrThrow(parseSocketAddr("0:0000.0000.0005:1001"))).toEqual(s)
    expect(failureOf(parseSocketAddr("0:0000.0000.0005:65536"))).toBe("invalid")
    expect(failureOf(parseSocketAddr("0:0000.0000.0005"))).not.toBe("ok")
  })

  it("property: text and binary forms round-trip", () => {
    fc.assert(fc.property(arbAddr, (a) => {
      expect(Result.getOrThrow(parseAddr(formatAddr(a)))).toEqual(a)
      expect(Result.getOrThrow(decodeAddr(encodeAddr(a)))).toEqual(a)
    }), { numRuns: 500 })
  })

  it("property: parsing any string never throws", () => {
    fc.assert(fc.property(fc.string({ maxLength: 40 }), (text) => {
      parseAddr(text)
      parseSocketAddr(text)
    }), { numRuns: 1000 })
  })
})

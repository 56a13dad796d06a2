import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import {
  type BeaconMessage,
  BeaconMessageType,
  decodeBeaconMessage,
  encodeBeaconMessage,
  MAX_RELAY_FRAME_BYTES,
  NotifyKind
} from "../../src/protocol/beacon.ts"
import { classifyDatagram } from "../../src/protocol/tunnel-frame.ts"
import {
  arbBeaconMessage,
  arbIpv6Bytes,
  canonicalIpv6ByUrl,
  failure,
  fromHex,
  hex,
  isWellFormedOutcome,
  mutatedFrom,
  ok,
  u16
} from "./arbitraries.ts"

const roundTrip = (m: BeaconMessage): BeaconMessage => ok(decodeBeaconMessage(encodeBeaconMessage(m)))

const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => new Uint8Array(Buffer.concat(parts))

/** The IP text a DiscoverReply carrying these raw IP bytes decodes to. */
const ipTextOf = (ip: Uint8Array): string => {
  const decoded = ok(decodeBeaconMessage(concat(new Uint8Array([0x02, ip.byteLength]), ip, fromHex("0050"))))
  if (decoded._tag !== "DiscoverReply") throw new Error("unreachable")
  return decoded.endpoint.ip
}

describe("beacon message layouts", () => {
  const examples: ReadonlyArray<[string, BeaconMessage]> = [
    ["01 00000005", { _tag: "Discover", node: 5 }],
    ["02 04 cb007107 2329", { _tag: "DiscoverReply", endpoint: { ip: "203.0.113.7", port: 9001 } }],
    [
      "02 10 20010db8000000000000000000000001 01bb",
      { _tag: "DiscoverReply", endpoint: { ip: "2001:db8::1", port: 443 } }
    ],
    ["03 00000001 00000002", { _tag: "PunchRequest", requester: 1, target: 2 }],
    ["04 04 0a000001 fde8", { _tag: "PunchCommand", endpoint: { ip: "10.0.0.1", port: 65000 } }],
    ["05 00000003 00000004 50494c50", { _tag: "Relay", sender: 3, dest: 4, frame: fromHex("50494c50") }],
    ["06 00000003 50494c50", { _tag: "RelayDeliver", sender: 3, frame: fromHex("50494c50") }],
    ["07 00000009 0002 00000001 ffffffff", { _tag: "Sync", beaconId: 9, nodes: [1, 0xffffffff] }],
    ["07 00000009 0000", { _tag: "Sync", beaconId: 9, nodes: [] }],
    ["0a 01", { _tag: "Notify", kind: NotifyKind.RelayedHandshakeWaiting }]
  ]
  for (const [bytes, message] of examples) {
    it(`${message._tag}: ${bytes}`, () => {
      expect(hex(encodeBeaconMessage(message))).toBe(bytes.replace(/ /g, ""))
      expect(ok(decodeBeaconMessage(fromHex(bytes)))).toEqual(message)
    })
  }

  it("uses the type codes of reference §7, all below 0x10 so the tunnel socket routes them here", () => {
    expect(Object.values(BeaconMessageType)).toEqual([1, 2, 3, 4, 5, 6, 7, 0x0a])
    for (const type of Object.values(BeaconMessageType)) expect(classifyDatagram(new Uint8Array([type]))).toBe("Beacon")
  })

  it("gives the relayed inner frame as a view of the datagram", () => {
    const bytes = fromHex("06 00000003 50494c50".replace(/ /g, ""))
    const decoded = ok(decodeBeaconMessage(bytes))
    if (decoded._tag !== "RelayDeliver") throw new Error("unreachable")
    expect(decoded.frame.buffer).toBe(bytes.buffer)
  })

  it("decodes unknown Notify kinds (the caller ignores them)", () => {
    expect(ok(decodeBeaconMessage(fromHex("0a7f")))).toEqual({ _tag: "Notify", kind: 0x7f })
  })
})

describe("trailing bytes", () => {
  it("are ignored after fixed layouts, as newer Go peers append trailers", () => {
    const pubKey = new Uint8Array(32).fill(9)
    expect(ok(decodeBeaconMessage(concat(fromHex("0100000005"), pubKey)))).toEqual({ _tag: "Discover", node: 5 })
    const grant = new Uint8Array(72).fill(1)
    expect(ok(decodeBeaconMessage(concat(fromHex("030000000100000002"), grant)))).toEqual({
      _tag: "PunchRequest",
      requester: 1,
      target: 2
    })
    expect(ok(decodeBeaconMessage(fromHex("0204cb0071072329ff")))).toEqual({
      _tag: "DiscoverReply",
      endpoint: { ip: "203.0.113.7", port: 9001 }
    })
    expect(ok(decodeBeaconMessage(fromHex("07000000090001000000010000")))).toEqual({ _tag: "Sync", beaconId: 9, nodes: [1] })
  })
})

describe("decodeBeaconMessage failures", () => {
  const cases: ReadonlyArray<[string, string, string]> = [
    ["empty datagram", "", "short"],
    ["Discover without its node ID", "01000000", "short"],
    ["DiscoverReply without ip_len", "02", "short"],
    ["DiscoverReply with ip_len 5", "02050102030405 0050", "invalid"],
    ["DiscoverReply cut inside the port", "0204cb00710723", "short"],
    ["PunchRequest without the target", "0300000001000000", "short"],
    ["PunchCommand with a 16-byte ip_len but 4 bytes", "0410cb0071072329", "short"],
    ["Relay with no inner frame", "050000000300000004", "short"],
    ["RelayDeliver with no inner frame", "0600000003", "short"],
    ["Sync whose count exceeds its nodes", "07000000090003 00000001 00000002", "short"],
    ["Sync without the count", "0700000009", "short"],
    ["Notify without its kind", "0a", "short"],
    ["type 0x08 (unassigned)", "0800000000", "bad_magic"],
    ["type 0x00", "00", "bad_magic"],
    ["a tunnel magic", "50494c50", "bad_magic"]
  ]
  for (const [name, bytes, reason] of cases) {
    it(`${reason}: ${name}`, () => {
      expect(failure(decodeBeaconMessage(fromHex(bytes))).reason).toBe(reason)
    })
  }

  it("oversize: a relayed frame past 65535 bytes", () => {
    const header = fromHex("050000000300000004")
    expect(ok(decodeBeaconMessage(concat(header, new Uint8Array(MAX_RELAY_FRAME_BYTES))))._tag).toBe("Relay")
    expect(failure(decodeBeaconMessage(concat(header, new Uint8Array(MAX_RELAY_FRAME_BYTES + 1)))).reason).toBe("oversize")
  })
})

describe("IP text", () => {
  it("prints IPv6 in RFC 5952 form", () => {
    expect(ipTextOf(fromHex("20010db8000000000001000000000001"))).toBe("2001:db8::1:0:0:1") // first of two equal runs
    expect(ipTextOf(fromHex("20010db8000000010000000000000001"))).toBe("2001:db8:0:1::1") // longest run wins
    expect(ipTextOf(fromHex("20010db8000000010001000100010001"))).toBe("2001:db8:0:1:1:1:1:1") // one zero group stays
    expect(ipTextOf(new Uint8Array(16))).toBe("::")
    expect(ipTextOf(fromHex("00000000000000000000000000000001"))).toBe("::1")
    expect(ipTextOf(fromHex("fe800000000000000000000000000000"))).toBe("fe80::")
    expect(ipTextOf(fromHex("ABCD00000000000000000000000000EF"))).toBe("abcd::ef")
  })

  it("treats an IPv4-mapped IPv6 address as the IPv4 address it is, like Go's net.IP", () => {
    expect(ipTextOf(fromHex("00000000000000000000ffffcb007107"))).toBe("203.0.113.7")
    for (const ip of ["::ffff:203.0.113.7", "::FFFF:cb00:7107", "0:0:0:0:0:ffff:203.0.113.7"]) {
      const encoded = encodeBeaconMessage({ _tag: "PunchCommand", endpoint: { ip, port: 1 } })
      expect(hex(encoded)).toBe("0404cb0071070001")
    }
  })

  it("accepts any valid IPv6 spelling when encoding", () => {
    const spellings = ["2001:DB8:0:0:0:0:0:1", "2001:db8::0:1", "2001:0db8::1", "2001:db8:0000::1"]
    for (const ip of spellings) {
      expect(roundTrip({ _tag: "DiscoverReply", endpoint: { ip, port: 1 } })).toEqual({
        _tag: "DiscoverReply",
        endpoint: { ip: "2001:db8::1", port: 1 }
      })
    }
  })

  it("matches an independent RFC 5952 formatter (the WHATWG URL parser) on any address", () => {
    fc.assert(
      fc.property(arbIpv6Bytes, (bytes) => {
        expect(ipTextOf(bytes)).toBe(canonicalIpv6ByUrl(bytes))
      }),
      { numRuns: 500 }
    )
  })

  it("maps any IPv6 spelling fast-check generates to one address whose printed form is a fixed point", () => {
    fc.assert(
      fc.property(fc.ipV6(), u16, (ip, port) => {
        const first = encodeBeaconMessage({ _tag: "PunchCommand", endpoint: { ip, port } })
        const decoded = ok(decodeBeaconMessage(first))
        expect(encodeBeaconMessage(decoded)).toEqual(first)
      }),
      { numRuns: 500 }
    )
  })
})

describe("encoder preconditions", () => {
  const frame = new Uint8Array([1])
  const cases: ReadonlyArray<[string, BeaconMessage]> = [
    ["a host name instead of an IP", { _tag: "DiscoverReply", endpoint: { ip: "localhost", port: 1 } }],
    ["an IPv6 zone", { _tag: "PunchCommand", endpoint: { ip: "fe80::1%eth0", port: 1 } }],
    ["IPv4 with a leading zero", { _tag: "PunchCommand", endpoint: { ip: "10.0.0.01", port: 1 } }],
    ["port 65536", { _tag: "DiscoverReply", endpoint: { ip: "10.0.0.1", port: 65536 } }],
    ["node past 32 bits", { _tag: "Discover", node: 2 ** 32 }],
    ["negative punch target", { _tag: "PunchRequest", requester: 1, target: -1 }],
    ["empty relay frame", { _tag: "Relay", sender: 1, dest: 2, frame: new Uint8Array(0) }],
    ["relay frame past 65535 bytes", { _tag: "RelayDeliver", sender: 1, frame: new Uint8Array(MAX_RELAY_FRAME_BYTES + 1) }],
    ["relay dest past 32 bits", { _tag: "Relay", sender: 1, dest: 2 ** 32, frame }],
    ["more than 65535 Sync nodes", { _tag: "Sync", beaconId: 1, nodes: new Array<number>(65536).fill(1) }],
    ["a Sync node past 32 bits", { _tag: "Sync", beaconId: 1, nodes: [1, 2 ** 32] }],
    ["Notify kind 256", { _tag: "Notify", kind: 256 }]
  ]
  for (const [name, message] of cases) {
    it(`throws a RangeError: ${name}`, () => {
      expect(() => encodeBeaconMessage(message)).toThrow(RangeError)
    })
  }
})

describe("beacon message properties", () => {
  it("decode(encode(m)) equals m, for every message type", () => {
    fc.assert(
      fc.property(arbBeaconMessage, (m) => {
        expect(roundTrip(m)).toEqual(m)
      }),
      { numRuns: 600 }
    )
  })

  it("never throws on random bytes, with or without a valid type byte in front", () => {
    const arbBytes = fc.oneof(
      fc.uint8Array({ maxLength: 100, size: "max" }),
      fc.tuple(fc.constantFrom(...Object.values(BeaconMessageType)), fc.uint8Array({ maxLength: 100, size: "max" })).map(
        ([type, rest]) => concat(new Uint8Array([type]), rest)
      )
    )
    fc.assert(
      fc.property(arbBytes, (bytes) => {
        expect(isWellFormedOutcome(decodeBeaconMessage(bytes))).toBe(true)
      }),
      { numRuns: 1000 }
    )
  })

  it("never throws on truncated, extended or flipped valid messages", () => {
    fc.assert(
      fc.property(mutatedFrom(arbBeaconMessage.map(encodeBeaconMessage)), (bytes) => {
        expect(isWellFormedOutcome(decodeBeaconMessage(bytes))).toBe(true)
      }),
      { numRuns: 1000 }
    )
  })
})

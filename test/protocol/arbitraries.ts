/**
 * fast-check arbitraries and small Result helpers shared by the wire-codec tests.
 */
import { Result } from "effect"
import fc from "fast-check"
import type { Addr } from "../../src/protocol/address.ts"
import type { BeaconMessage, UdpEndpoint } from "../../src/protocol/beacon.ts"
import { DecodeError } from "../../src/protocol/errors.ts"
import { type Packet, Protocol } from "../../src/protocol/packet.ts"
import {
  ED25519_PUBLIC_KEY_BYTES,
  GCM_TAG_BYTES,
  MAX_FRAGMENT_CHUNK_BYTES,
  MAX_FRAGMENTS,
  NONCE_BYTES,
  SIGNATURE_BYTES,
  type TunnelFrame,
  X25519_PUBLIC_KEY_BYTES
} from "../../src/protocol/tunnel-frame.ts"

// ---------------------------------------------------------------------------------------------------------
// Result helpers

export const ok = <A>(result: Result.Result<A, DecodeError>): A => {
  if (Result.isFailure(result)) throw new Error(`expected success, got ${result.failure.code}: ${result.failure.message}`)
  return result.success
}

export const failure = <A>(result: Result.Result<A, DecodeError>): DecodeError => {
  if (Result.isSuccess(result)) throw new Error(`expected a failure, got ${JSON.stringify(result.success)}`)
  return result.failure
}

/** What every decoder promises on any input: a Result whose failure, if any, is a `DecodeError`. */
export const isWellFormedOutcome = (result: Result.Result<unknown, DecodeError>): boolean =>
  Result.isSuccess(result) || result.failure instanceof DecodeError

export const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex")
export const fromHex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text.replace(/\s+/g, ""), "hex"))

// ---------------------------------------------------------------------------------------------------------
// Primitive arbitraries
//
// Collections that must reach their maxLength say `size: "max"`: fast-check's default size keeps arrays at
// about ten elements whatever the maxLength.

export const u8 = fc.integer({ min: 0, max: 0xff })
export const u16 = fc.integer({ min: 0, max: 0xffff })
export const u32 = fc.integer({ min: 0, max: 0xffffffff })
export const bytesOf = (length: number) => fc.uint8Array({ minLength: length, maxLength: length })

export const arbAddr: fc.Arbitrary<Addr> = fc.record({ network: u16, node: u32 })

// ---------------------------------------------------------------------------------------------------------
// Packets and tunnel frames

export const arbPacket = (maxPayload = 4096): fc.Arbitrary<Packet> =>
  fc.record({
    flags: fc.integer({ min: 0, max: 0xf }),
    protocol: fc.constantFrom(Protocol.Stream, Protocol.Datagram, Protocol.Control),
    src: arbAddr,
    dst: arbAddr,
    srcPort: u16,
    dstPort: u16,
    seq: u32,
    ack: u32,
    window: u16,
    payload: fc.uint8Array({ maxLength: maxPayload, size: "max" })
  })

export const arbTunnelFrame: fc.Arbitrary<TunnelFrame> = fc.oneof(
  fc.record({ _tag: fc.constant("Plain" as const), packet: arbPacket(512) }),
  fc.record({
    _tag: fc.constant("Encrypted" as const),
    sender: u32,
    nonce: bytesOf(NONCE_BYTES),
    sealed: fc.uint8Array({ minLength: GCM_TAG_BYTES, maxLength: 600, size: "max" })
  }),
  fc.record({ _tag: fc.constant("KeyExchange" as const), node: u32, x25519: bytesOf(X25519_PUBLIC_KEY_BYTES) }),
  fc.record({
    _tag: fc.constant("AuthKeyExchange" as const),
    node: u32,
    x25519: bytesOf(X25519_PUBLIC_KEY_BYTES),
    ed25519: bytesOf(ED25519_PUBLIC_KEY_BYTES),
    signature: bytesOf(SIGNATURE_BYTES)
  }),
  fc.constant({ _tag: "Punch" as const }),
  fc.integer({ min: 1, max: MAX_FRAGMENTS }).chain((count) =>
    fc.record({
      _tag: fc.constant("Fragment" as const),
      sender: u32,
      fragId: u32,
      index: fc.integer({ min: 0, max: count - 1 }),
      count: fc.constant(count),
      chunk: fc.uint8Array({ maxLength: MAX_FRAGMENT_CHUNK_BYTES, size: "max" })
    })
  )
)

// ---------------------------------------------------------------------------------------------------------
// Beacon messages

const isIpv4Mapped = (b: Uint8Array): boolean => b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff

/**
 * RFC 5952 text of an IPv6 address, computed by an independent implementation: the WHATWG URL parser
 * (which compresses the same way but never prints dotted IPv4, hence IPv4-mapped addresses are left out).
 * The input is spelled out in full, uppercase, with leading zeros, so the parser has to do all the work.
 */
export const canonicalIpv6ByUrl = (bytes: Uint8Array): string => {
  const spelled = Array.from({ length: 8 }, (_, i) => hex(bytes.subarray(2 * i, 2 * i + 2)).toUpperCase()).join(":")
  return new URL(`http://[${spelled}]/`).hostname.slice(1, -1)
}

export const arbIpv6Bytes = bytesOf(16).filter((b) => !isIpv4Mapped(b))

export const arbEndpoint: fc.Arbitrary<UdpEndpoint> = fc.record({
  ip: fc.oneof(fc.ipV4(), arbIpv6Bytes.map(canonicalIpv6ByUrl)),
  port: u16
})

const arbInnerFrame = fc.uint8Array({ minLength: 1, maxLength: 1500, size: "max" })

export const arbBeaconMessage: fc.Arbitrary<BeaconMessage> = fc.oneof(
  fc.record({ _tag: fc.constant("Discover" as const), node: u32 }),
  fc.record({ _tag: fc.constant("DiscoverReply" as const), endpoint: arbEndpoint }),
  fc.record({ _tag: fc.constant("PunchRequest" as const), requester: u32, target: u32 }),
  fc.record({ _tag: fc.constant("PunchCommand" as const), endpoint: arbEndpoint }),
  fc.record({ _tag: fc.constant("Relay" as const), sender: u32, dest: u32, frame: arbInnerFrame }),
  fc.record({ _tag: fc.constant("RelayDeliver" as const), sender: u32, frame: arbInnerFrame }),
  fc.record({ _tag: fc.constant("Sync" as const), beaconId: u32, nodes: fc.array(u32, { maxLength: 300, size: "max" }) }),
  fc.record({ _tag: fc.constant("Notify" as const), kind: u8 })
)

// ---------------------------------------------------------------------------------------------------------
// Corruption

export type Mutation =
  | { readonly kind: "truncate"; readonly at: number }
  | { readonly kind: "extend"; readonly extra: Uint8Array }
  | { readonly kind: "flip"; readonly at: number; readonly mask: number }

const arbMutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("extend" as const), extra: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), mask: fc.integer({ min: 1, max: 0xff }) })
)

export const applyMutation = (bytes: Uint8Array, m: Mutation): Uint8Array => {
  switch (m.kind) {
    case "truncate":
      return bytes.slice(0, m.at % (bytes.byteLength + 1))
    case "extend": {
      const out = new Uint8Array(bytes.byteLength + m.extra.byteLength)
      out.set(bytes)
      out.set(m.extra, bytes.byteLength)
      return out
    }
    case "flip": {
      const out = bytes.slice()
      if (out.byteLength > 0) out[m.at % out.byteLength]! ^= m.mask
      return out
    }
  }
}

/** Valid encodings put through one to three truncations, extensions or byte flips. */
export const mutatedFrom = (valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> =>
  fc.tuple(valid, fc.array(arbMutation, { minLength: 1, maxLength: 3 })).map(([bytes, mutations]) =>
    mutations.reduce(applyMutation, bytes)
  )

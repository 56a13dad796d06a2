/**
 * Beacon messages (reference §7): UDP datagrams whose first byte, the message type, is below 0x10.
 *
 * | type | message      | after the type byte                                   |
 * |------|--------------|-------------------------------------------------------|
 * | 0x01 | Discover     | node u32                                              |
 * | 0x02 | DiscoverReply| ip_len u8 (4 or 16) ‖ ip ‖ port u16 — observed public endpoint |
 * | 0x03 | PunchRequest | requester u32 ‖ target u32                            |
 * | 0x04 | PunchCommand | ip_len u8 ‖ ip ‖ port u16 — where to send punches     |
 * | 0x05 | Relay        | sender u32 ‖ dest u32 ‖ inner tunnel frame            |
 * | 0x06 | RelayDeliver | sender u32 ‖ inner tunnel frame                       |
 * | 0x07 | Sync         | beacon ID u32 ‖ count u16 ‖ count × node u32          |
 * | 0x0A | Notify       | kind u8 (0x01 = a relayed handshake waits at the registry; others are ignored) |
 *
 * Bytes after a fixed layout are ignored, as the Go beacon does: newer Go peers append trailers (a public key
 * after Discover, a signed punch grant after PunchRequest), and rejecting those would break interop. The
 * inner frame of Relay/RelayDeliver is 1 to 65535 bytes (the Go beacon's `maxRelayPayload`) and is a
 * zero-copy `subarray` of the input.
 *
 * IP addresses are text. Decoding prints them like Go's `net.IP.String()`: IPv4 dotted decimal, an
 * IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as plain IPv4, other IPv6 addresses in the RFC 5952 form
 * (lowercase, no leading zeros, the longest run of two or more zero groups — the first on a tie — as `::`).
 * Encoding accepts any text `net.isIP` accepts except a zone suffix (`%eth0`), which the wire cannot carry:
 * callers strip it from link-local source addresses. Like the Go beacon (`IP.To4()` first), it sends IPv4
 * and IPv4-mapped addresses as 4 bytes, so the `::ffff:…` form a dual-stack socket reports for an IPv4 peer
 * reaches the other side as the IPv4 endpoint it is, which an IPv4-only socket can send to. Every address
 * therefore has one wire form and one text form, and text → bytes → text is the identity on the latter.
 *
 * Encoders throw a `RangeError` on a field outside its wire range, like the other encoders here (packet.ts).
 */
import { isIP } from "node:net"
import { Result } from "effect"
import { type DecodeError, decodeFail } from "./errors.ts"
import { MAX_U16, MAX_U32, MAX_U8, requireInt } from "./packet.ts"

export const BeaconMessageType = {
  Discover: 0x01,
  DiscoverReply: 0x02,
  PunchRequest: 0x03,
  PunchCommand: 0x04,
  Relay: 0x05,
  RelayDeliver: 0x06,
  Sync: 0x07,
  Notify: 0x0a
} as const

export const NotifyKind = { RelayedHandshakeWaiting: 0x01 } as const

export const MAX_RELAY_FRAME_BYTES = 0xffff
export const MAX_SYNC_NODES = 0xffff

export interface UdpEndpoint {
  readonly ip: string
  readonly port: number
}

export type BeaconMessage =
  | { readonly _tag: "Discover"; readonly node: number }
  | { readonly _tag: "DiscoverReply"; readonly endpoint: UdpEndpoint }
  | { readonly _tag: "PunchRequest"; readonly requester: number; readonly target: number }
  | { readonly _tag: "PunchCommand"; readonly endpoint: UdpEndpoint }
  | { readonly _tag: "Relay"; readonly sender: number; readonly dest: number; readonly frame: Uint8Array }
  | { readonly _tag: "RelayDeliver"; readonly sender: number; readonly frame: Uint8Array }
  | { readonly _tag: "Sync"; readonly beaconId: number; readonly nodes: ReadonlyArray<number> }
  | { readonly _tag: "Notify"; readonly kind: number }

const FRAME = "beacon message"

// ---------------------------------------------------------------------------------------------------------
// IP text ⇄ bytes

const IPV4_BYTES = 4
const IPV6_BYTES = 16
const IPV6_WORDS = 8

const parseIpv4Words = (text: string): ReadonlyArray<number> => {
  const [a, b, c, d] = text.split(".").map(Number) as [number, number, number, number]
  return [(a << 8) | b, (c << 8) | d]
}

/** IPv6 text (already validated by `isIP`) as its eight 16-bit words, an embedded IPv4 tail included. */
const parseIpv6Words = (text: string): ReadonlyArray<number> => {
  const groups = (part: string): ReadonlyArray<number> =>
    part === "" ? [] : part.split(":").flatMap((g) => (g.includes(".") ? parseIpv4Words(g) : [parseInt(g, 16)]))
  const gap = text.indexOf("::")
  if (gap < 0) return groups(text)
  const head = groups(text.slice(0, gap))
  const tail = groups(text.slice(gap + 2))
  return [...head, ...new Array<number>(IPV6_WORDS - head.length - tail.length).fill(0), ...tail]
}

const isIpv4Mapped = (bytes: Uint8Array): boolean =>
  bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff

/** The wire bytes of an IP address, or `undefined` if `text` is not an IPv4/IPv6 address without a zone. */
const ipToBytes = (text: string): Uint8Array | undefined => {
  const family = text.includes("%") ? 0 : isIP(text)
  if (family === 4) return Uint8Array.from(text.split("."), Number)
  if (family !== 6) return undefined
  const out = new Uint8Array(IPV6_BYTES)
  const view = new DataView(out.buffer)
  parseIpv6Words(text).forEach((word, i) => view.setUint16(2 * i, word))
  return isIpv4Mapped(out) ? out.subarray(IPV6_BYTES - IPV4_BYTES) : out
}

const formatIpv6 = (bytes: Uint8Array): string => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, IPV6_BYTES)
  const words = Array.from({ length: IPV6_WORDS }, (_, i) => view.getUint16(2 * i))
  let runStart = -1
  let runLength = 1 // a single zero group is never compressed (RFC 5952 §4.2.2)
  for (let i = 0; i < IPV6_WORDS;) {
    if (words[i] !== 0) {
      i++
      continue
    }
    let end = i
    while (end < IPV6_WORDS && words[end] === 0) end++
    if (end - i > runLength) {
      runStart = i
      runLength = end - i
    }
    i = end
  }
  const hex = (ws: ReadonlyArray<number>): string => ws.map((w) => w.toString(16)).join(":")
  if (runStart < 0) return hex(words)
  return `${hex(words.slice(0, runStart))}::${hex(words.slice(runStart + runLength))}`
}

/** Text form of a 4- or 16-byte IP address (see the module doc for the exact form); 16 bytes may be IPv4-mapped. */
const ipFromBytes = (bytes: Uint8Array): string => {
  if (bytes.byteLength === IPV6_BYTES && !isIpv4Mapped(bytes)) return formatIpv6(bytes)
  return Array.from(bytes.subarray(bytes.byteLength - IPV4_BYTES)).join(".")
}

// ---------------------------------------------------------------------------------------------------------
// Decoding

const TYPE_BYTES = 1
const ID_BYTES = 4
const RELAY_HEADER_BYTES = TYPE_BYTES + 2 * ID_BYTES
const RELAY_DELIVER_HEADER_BYTES = TYPE_BYTES + ID_BYTES

const short = (name: string, bytes: Uint8Array, need: number): Result.Result<never, DecodeError> =>
  decodeFail(FRAME, "short", `${name} needs ${need} bytes, got ${bytes.byteLength}`)

const decodeEndpoint = (
  name: string,
  bytes: Uint8Array,
  view: DataView
): Result.Result<UdpEndpoint, DecodeError> => {
  if (bytes.byteLength < 2) return short(name, bytes, 2)
  const ipLength = view.getUint8(1)
  if (ipLength !== IPV4_BYTES && ipLength !== IPV6_BYTES) {
    return decodeFail(FRAME, "invalid", `${name} IP length ${ipLength} is neither 4 nor 16`)
  }
  const need = 2 + ipLength + 2
  if (bytes.byteLength < need) return short(name, bytes, need)
  return Result.succeed({ ip: ipFromBytes(bytes.subarray(2, 2 + ipLength)), port: view.getUint16(2 + ipLength) })
}

/** The inner frame after a relay header of `offset` bytes (the header's fields are read by the caller). */
const decodeInnerFrame = (name: string, bytes: Uint8Array, offset: number): Result.Result<Uint8Array, DecodeError> => {
  if (bytes.byteLength <= offset) return short(name, bytes, offset + 1)
  const frame = bytes.subarray(offset)
  if (frame.byteLength > MAX_RELAY_FRAME_BYTES) {
    return decodeFail(FRAME, "oversize", `${name} frame of ${frame.byteLength} bytes exceeds ${MAX_RELAY_FRAME_BYTES}`)
  }
  return Result.succeed(frame)
}

const SYNC_HEADER_BYTES = TYPE_BYTES + ID_BYTES + 2

const decodeSync = (bytes: Uint8Array, view: DataView): Result.Result<BeaconMessage, DecodeError> => {
  if (bytes.byteLength < SYNC_HEADER_BYTES) return short("Sync", bytes, SYNC_HEADER_BYTES)
  const count = view.getUint16(TYPE_BYTES + ID_BYTES)
  const need = SYNC_HEADER_BYTES + ID_BYTES * count
  if (bytes.byteLength < need) return short("Sync", bytes, need)
  const nodes = new Array<number>(count)
  for (let i = 0; i < count; i++) nodes[i] = view.getUint32(SYNC_HEADER_BYTES + ID_BYTES * i)
  return Result.succeed({ _tag: "Sync", beaconId: view.getUint32(TYPE_BYTES), nodes })
}

/** Decodes a datagram that `classifyDatagram` (tunnel-frame.ts) called a beacon message. */
export const decodeBeaconMessage = (bytes: Uint8Array): Result.Result<BeaconMessage, DecodeError> => {
  if (bytes.byteLength === 0) return decodeFail(FRAME, "short", "empty datagram")
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const type = view.getUint8(0)
  const atLeast = (name: string, need: number, decode: () => BeaconMessage): Result.Result<BeaconMessage, DecodeError> =>
    bytes.byteLength < need ? short(name, bytes, need) : Result.succeed(decode())
  switch (type) {
    case BeaconMessageType.Discover:
      return atLeast("Discover", TYPE_BYTES + ID_BYTES, () => ({ _tag: "Discover", node: view.getUint32(TYPE_BYTES) }))
    case BeaconMessageType.DiscoverReply:
      return Result.map(decodeEndpoint("DiscoverReply", bytes, view), (endpoint) => ({ _tag: "DiscoverReply", endpoint }))
    case BeaconMessageType.PunchRequest:
      return atLeast("PunchRequest", TYPE_BYTES + 2 * ID_BYTES, () => ({
        _tag: "PunchRequest",
        requester: view.getUint32(TYPE_BYTES),
        target: view.getUint32(TYPE_BYTES + ID_BYTES)
      }))
    case BeaconMessageType.PunchCommand:
      return Result.map(decodeEndpoint("PunchCommand", bytes, view), (endpoint) => ({ _tag: "PunchCommand", endpoint }))
    case BeaconMessageType.Relay:
      return Result.map(decodeInnerFrame("Relay", bytes, RELAY_HEADER_BYTES), (frame) => ({
        _tag: "Relay",
        sender: view.getUint32(TYPE_BYTES),
        dest: view.getUint32(TYPE_BYTES + ID_BYTES),
        frame
      }))
    case BeaconMessageType.RelayDeliver:
      return Result.map(decodeInnerFrame("RelayDeliver", bytes, RELAY_DELIVER_HEADER_BYTES), (frame) => ({
        _tag: "RelayDeliver",
        sender: view.getUint32(TYPE_BYTES),
        frame
      }))
    case BeaconMessageType.Sync:
      return decodeSync(bytes, view)
    case BeaconMessageType.Notify:
      return atLeast("Notify", TYPE_BYTES + 1, () => ({ _tag: "Notify", kind: view.getUint8(TYPE_BYTES) }))
    default:
      return decodeFail(FRAME, "bad_magic", `unknown beacon message type 0x${type.toString(16).padStart(2, "0")}`)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

const allocate = (type: number, length: number): { readonly out: Uint8Array; readonly view: DataView } => {
  const out = new Uint8Array(length)
  const view = new DataView(out.buffer)
  view.setUint8(0, type)
  return { out, view }
}

const requireId = (name: string, field: string, id: number): void => requireInt(name, field, id, 0, MAX_U32)

const encodeEndpoint = (type: number, name: string, endpoint: UdpEndpoint): Uint8Array => {
  const ip = ipToBytes(endpoint.ip)
  if (ip === undefined) throw new RangeError(`${name}: "${endpoint.ip}" is not an IP address without a zone`)
  requireInt(name, "port", endpoint.port, 0, MAX_U16)
  const { out, view } = allocate(type, 2 + ip.byteLength + 2)
  view.setUint8(1, ip.byteLength)
  out.set(ip, 2)
  view.setUint16(2 + ip.byteLength, endpoint.port)
  return out
}

/** Header (type and IDs) followed by the inner frame, for Relay and RelayDeliver. */
const encodeRelayed = (type: number, name: string, ids: ReadonlyArray<number>, frame: Uint8Array): Uint8Array => {
  requireInt(name, "inner frame length", frame.byteLength, 1, MAX_RELAY_FRAME_BYTES)
  const header = TYPE_BYTES + ID_BYTES * ids.length
  const { out, view } = allocate(type, header + frame.byteLength)
  ids.forEach((id, i) => view.setUint32(TYPE_BYTES + ID_BYTES * i, id))
  out.set(frame, header)
  return out
}

export const encodeBeaconMessage = (m: BeaconMessage): Uint8Array => {
  const type = BeaconMessageType[m._tag]
  switch (m._tag) {
    case "Discover": {
      requireId(m._tag, "node", m.node)
      const { out, view } = allocate(type, TYPE_BYTES + ID_BYTES)
      view.setUint32(TYPE_BYTES, m.node)
      return out
    }
    case "DiscoverReply":
    case "PunchCommand":
      return encodeEndpoint(type, m._tag, m.endpoint)
    case "PunchRequest": {
      requireId(m._tag, "requester", m.requester)
      requireId(m._tag, "target", m.target)
      const { out, view } = allocate(type, TYPE_BYTES + 2 * ID_BYTES)
      view.setUint32(TYPE_BYTES, m.requester)
      view.setUint32(TYPE_BYTES + ID_BYTES, m.target)
      return out
    }
    case "Relay":
      requireId(m._tag, "sender", m.sender)
      requireId(m._tag, "dest", m.dest)
      return encodeRelayed(type, m._tag, [m.sender, m.dest], m.frame)
    case "RelayDeliver":
      requireId(m._tag, "sender", m.sender)
      return encodeRelayed(type, m._tag, [m.sender], m.frame)
    case "Sync": {
      requireId(m._tag, "beacon ID", m.beaconId)
      requireInt(m._tag, "node count", m.nodes.length, 0, MAX_SYNC_NODES)
      for (const node of m.nodes) requireId(m._tag, "node", node)
      const { out, view } = allocate(type, SYNC_HEADER_BYTES + ID_BYTES * m.nodes.length)
      view.setUint32(TYPE_BYTES, m.beaconId)
      view.setUint16(TYPE_BYTES + ID_BYTES, m.nodes.length)
      m.nodes.forEach((node, i) => view.setUint32(SYNC_HEADER_BYTES + ID_BYTES * i, node))
      return out
    }
    case "Notify": {
      requireInt(m._tag, "kind", m.kind, 0, MAX_U8)
      const { out, view } = allocate(type, TYPE_BYTES + 1)
      view.setUint8(TYPE_BYTES, m.kind)
      return out
    }
  }
}

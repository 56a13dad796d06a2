/**
 * The Pilot packet (reference §3.1): a 34-byte big-endian header followed by up to 65535 payload bytes. It is
 * what travels inside a PILT frame in the clear and inside a PILS frame encrypted.
 *
 * | off | size | field                                                                 |
 * |-----|------|-----------------------------------------------------------------------|
 * | 0   | 1    | version (high nibble, = 1) ‖ flags (low nibble: SYN 1, ACK 2, FIN 4, RST 8) |
 * | 1   | 1    | protocol: 1 Stream, 2 Datagram, 3 Control                             |
 * | 2   | 2    | payload length                                                        |
 * | 4   | 6    | source address                                                        |
 * | 10  | 6    | destination address                                                   |
 * | 16  | 2    | source port                                                           |
 * | 18  | 2    | destination port                                                      |
 * | 20  | 4    | sequence number (byte offset)                                         |
 * | 24  | 4    | acknowledgment number (next expected byte)                            |
 * | 28  | 2    | window (free receive-buffer segments; 0 is a real zero window)       |
 * | 30  | 4    | CRC-32 (IEEE) over the header with this field zeroed ‖ payload        |
 *
 * Decoding is total (a `Result`, never a throw): the bytes come from the network.
 *
 * Encoding throws a `RangeError` on a field outside its wire range. Packets are built by our own transport
 * from values it already bounds (ports from validated IPC requests, sequence numbers wrapped with `seqAdd`,
 * segments no larger than the MSS), so a bad field is a bug to surface loudly, not an outcome to handle;
 * without the check `DataView` would silently wrap it into a different, valid-looking packet. Keeping the
 * encoder free of a `Result` also keeps the per-segment hot path free of an extra allocation. A caller that
 * does carry outside input into a packet (an IPC datagram payload) checks it against `MAX_PAYLOAD_BYTES`
 * first and answers its client with a typed error.
 */
import { crc32 } from "node:zlib"
import { Result } from "effect"
import { ADDR_BYTES, type Addr, isValidAddr, readAddr, writeAddr } from "./address.ts"
import { type DecodeError, decodeFail } from "./errors.ts"

export const PACKET_VERSION = 1
export const HEADER_BYTES = 34
export const MAX_PAYLOAD_BYTES = 0xffff

export const PacketFlag = { SYN: 0x1, ACK: 0x2, FIN: 0x4, RST: 0x8 } as const
const FLAG_BITS = 0x0f

export const Protocol = { Stream: 0x01, Datagram: 0x02, Control: 0x03 } as const
export type Protocol = (typeof Protocol)[keyof typeof Protocol]

/** Well-known ports (reference §3.2). 1003 is the old daemon's task submit; newer `common` calls it Verify. */
export const WellKnownPort = {
  Ping: 0,
  Control: 1,
  Echo: 7,
  Nameserver: 53,
  Http: 80,
  SecureChannel: 443,
  TrustHandshake: 444,
  Stdio: 1000,
  DataExchange: 1001,
  EventStream: 1002,
  TaskSubmit: 1003
} as const

/** Port ranges (reference §3.2): reserved 0–1023, registered 1024–49151, ephemeral 49152–65535. */
export const MAX_RESERVED_PORT = 1023
export const MAX_REGISTERED_PORT = 49151
export const MIN_EPHEMERAL_PORT = 49152

export interface Packet {
  /** Bitwise OR of `PacketFlag` values (4 bits). */
  readonly flags: number
  readonly protocol: Protocol
  readonly src: Addr
  readonly dst: Addr
  readonly srcPort: number
  readonly dstPort: number
  /** u32, compared with the RFC 1982 helpers below. */
  readonly seq: number
  readonly ack: number
  readonly window: number
  /** At most `MAX_PAYLOAD_BYTES`. A decoded packet's payload is a view into the decoded bytes (no copy). */
  readonly payload: Uint8Array
}

const OFF_LENGTH = 2
const OFF_SRC = 4
const OFF_DST = OFF_SRC + ADDR_BYTES
const OFF_SRC_PORT = 16
const OFF_DST_PORT = 18
const OFF_SEQ = 20
const OFF_ACK = 24
const OFF_WINDOW = 28
const OFF_CHECKSUM = 30
const CHECKSUM_BYTES = 4
const ZERO_CHECKSUM = new Uint8Array(CHECKSUM_BYTES)

const FRAME = "packet"

const isProtocol = (value: number): value is Protocol =>
  value === Protocol.Stream || value === Protocol.Datagram || value === Protocol.Control

// ---------------------------------------------------------------------------------------------------------
// Encoder preconditions, shared by every encoder in src/protocol that writes fixed-width fields.

export const MAX_U8 = 0xff
export const MAX_U16 = 0xffff
export const MAX_U32 = 0xffffffff

/** Throws a `RangeError` unless `value` is an integer in `[min, max]`. */
export const requireInt = (frame: string, field: string, value: number, min: number, max: number): void => {
  if (!(Number.isInteger(value) && value >= min && value <= max)) {
    throw new RangeError(`${frame}: ${field} ${value} is not an integer in [${min}, ${max}]`)
  }
}

/** Throws a `RangeError` unless `bytes` is exactly `length` bytes long. */
export const requireByteLength = (frame: string, field: string, bytes: Uint8Array, length: number): void => {
  if (bytes.byteLength !== length) {
    throw new RangeError(`${frame}: ${field} must be ${length} bytes, got ${bytes.byteLength}`)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Packet codec

/** Bytes `writePacket` / `encodePacket` produce for `p`. */
export const encodedPacketLength = (p: Packet): number => HEADER_BYTES + p.payload.byteLength

/**
 * Writes `p` at `offset` of `target`, which must have `encodedPacketLength(p)` bytes of room there. Lets a
 * frame encoder put the packet right after its own header without an intermediate copy.
 */
export const writePacket = (target: Uint8Array, offset: number, p: Packet): void => {
  requireInt(FRAME, "flags", p.flags, 0, FLAG_BITS)
  if (!isProtocol(p.protocol)) throw new RangeError(`${FRAME}: unknown protocol ${String(p.protocol)}`)
  requireInt(FRAME, "payload length", p.payload.byteLength, 0, MAX_PAYLOAD_BYTES)
  if (!isValidAddr(p.src)) throw new RangeError(`${FRAME}: invalid source address`)
  if (!isValidAddr(p.dst)) throw new RangeError(`${FRAME}: invalid destination address`)
  requireInt(FRAME, "source port", p.srcPort, 0, MAX_U16)
  requireInt(FRAME, "destination port", p.dstPort, 0, MAX_U16)
  requireInt(FRAME, "seq", p.seq, 0, MAX_U32)
  requireInt(FRAME, "ack", p.ack, 0, MAX_U32)
  requireInt(FRAME, "window", p.window, 0, MAX_U16)

  const length = encodedPacketLength(p)
  const out = target.subarray(offset, offset + length)
  if (out.byteLength !== length) throw new RangeError(`${FRAME}: target has no room for ${length} bytes at ${offset}`)
  const view = new DataView(out.buffer, out.byteOffset, length)
  view.setUint8(0, (PACKET_VERSION << 4) | p.flags)
  view.setUint8(1, p.protocol)
  view.setUint16(OFF_LENGTH, p.payload.byteLength)
  writeAddr(view, OFF_SRC, p.src)
  writeAddr(view, OFF_DST, p.dst)
  view.setUint16(OFF_SRC_PORT, p.srcPort)
  view.setUint16(OFF_DST_PORT, p.dstPort)
  view.setUint32(OFF_SEQ, p.seq)
  view.setUint32(OFF_ACK, p.ack)
  view.setUint16(OFF_WINDOW, p.window)
  view.setUint32(OFF_CHECKSUM, 0)
  out.set(p.payload, HEADER_BYTES)
  // The checksum field is still zero here, so one pass over the whole packet is the CRC the format defines.
  view.setUint32(OFF_CHECKSUM, crc32(out))
}

/** The wire bytes of `p`. Throws a `RangeError` if a field is outside its wire range (see the module doc). */
export const encodePacket = (p: Packet): Uint8Array => {
  const out = new Uint8Array(encodedPacketLength(p))
  writePacket(out, 0, p)
  return out
}

/**
 * Parses and verifies a packet. The cheap structural checks run before the CRC so garbage costs little;
 * every byte is still covered by the CRC, so no corruption passes. The returned payload is a zero-copy
 * `subarray` of `bytes`: copy it if `bytes` will be reused.
 */
export const decodePacket = (bytes: Uint8Array): Result.Result<Packet, DecodeError> => {
  if (bytes.byteLength < HEADER_BYTES) {
    return decodeFail(FRAME, "short", `${bytes.byteLength} bytes is less than the ${HEADER_BYTES}-byte header`)
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const first = view.getUint8(0)
  const version = first >>> 4
  if (version !== PACKET_VERSION) return decodeFail(FRAME, "invalid", `unsupported version ${version}`)
  const protocol = view.getUint8(1)
  if (!isProtocol(protocol)) return decodeFail(FRAME, "invalid", `unknown protocol 0x${protocol.toString(16)}`)
  const payloadLength = view.getUint16(OFF_LENGTH)
  const available = bytes.byteLength - HEADER_BYTES
  if (payloadLength !== available) {
    return decodeFail(FRAME, "inconsistent", `length field says ${payloadLength} payload bytes, ${available} present`)
  }
  const payload = bytes.subarray(HEADER_BYTES)
  // CRC of header-with-zeroed-checksum ‖ payload, computed in three runs so the input is never copied or mutated.
  const computed = crc32(payload, crc32(ZERO_CHECKSUM, crc32(bytes.subarray(0, OFF_CHECKSUM))))
  const carried = view.getUint32(OFF_CHECKSUM)
  if (computed !== carried) return decodeFail(FRAME, "bad_checksum", "checksum mismatch")
  return Result.succeed({
    flags: first & FLAG_BITS,
    protocol,
    src: readAddr(view, OFF_SRC),
    dst: readAddr(view, OFF_DST),
    srcPort: view.getUint16(OFF_SRC_PORT),
    dstPort: view.getUint16(OFF_DST_PORT),
    seq: view.getUint32(OFF_SEQ),
    ack: view.getUint32(OFF_ACK),
    window: view.getUint16(OFF_WINDOW),
    payload
  })
}

// ---------------------------------------------------------------------------------------------------------
// RFC 1982 serial-number arithmetic on u32 sequence numbers, as Go's `int32(a-b) > 0`.
// When a and b are exactly 2^31 apart the comparison is undefined by the RFC; like Go, both seqLt(a, b) and
// seqLt(b, a) are then true. Windows are far smaller than 2^31, so the transport never asks that question.

/** Signed distance from `b` to `a` in sequence space, in [-2^31, 2^31). */
export const seqDiff = (a: number, b: number): number => (a - b) | 0
export const seqLt = (a: number, b: number): boolean => seqDiff(a, b) < 0
export const seqLe = (a: number, b: number): boolean => seqDiff(a, b) <= 0
export const seqGt = (a: number, b: number): boolean => seqDiff(a, b) > 0
/** `a + n` wrapped to u32: how the transport advances a sequence number. */
export const seqAdd = (a: number, n: number): number => (a + n) >>> 0

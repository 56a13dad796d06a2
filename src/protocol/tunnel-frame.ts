/**
 * Tunnel frames and the demultiplexing of datagrams on the tunnel socket (reference §3.3, §4.1, §8.7).
 *
 * A datagram whose first byte is below 0x10 is a beacon message (beacon.ts). Anything else starts with a
 * 4-byte magic naming the tunnel frame:
 *
 * | magic | tag               | after the magic                                               | length      |
 * |-------|-------------------|---------------------------------------------------------------|-------------|
 * | PILT  | `Plain`           | a packet (packet.ts), in the clear                            | ≥ 4 + 34    |
 * | PILS  | `Encrypted`       | sender node u32 ‖ nonce 12 ‖ ciphertext ‖ GCM tag 16          | ≥ 4 + 32    |
 * | PILK  | `KeyExchange`     | node u32 ‖ X25519 public key 32                               | exactly 40  |
 * | PILA  | `AuthKeyExchange` | node u32 ‖ X25519 public 32 ‖ Ed25519 public 32 ‖ signature 64 | exactly 136 |
 * | PILP  | `Punch`           | nothing (NAT hole punch)                                      | exactly 4   |
 * | PILF  | `Fragment`        | sender u32 ‖ fragment ID u32 ‖ index u8 ‖ count u8 ‖ chunk    | ≥ 14        |
 *
 * Decoders never throw and never copy: byte fields of a decoded frame are `subarray` views of the input, so
 * copy them before the input buffer is reused. Encoders allocate exactly one buffer per frame and throw a
 * `RangeError` on a field outside its wire range (same policy and reasons as packet.ts: every value they
 * take was produced by our own code).
 *
 * The PILA signed challenge (`auth` ‖ node ‖ X25519 key) is built by `keyExchangeChallenge` in
 * src/crypto/session.ts, next to the signing and verification that use it.
 */
import { Result } from "effect"
import { type DecodeError, decodeFail } from "./errors.ts"
import {
  decodePacket,
  encodedPacketLength,
  MAX_U32,
  type Packet,
  requireByteLength,
  requireInt,
  writePacket
} from "./packet.ts"

export const MAGIC_BYTES = 4
export const TunnelMagic = {
  PILT: 0x50494c54,
  PILS: 0x50494c53,
  PILK: 0x50494c4b,
  PILA: 0x50494c41,
  PILP: 0x50494c50,
  PILF: 0x50494c46
} as const

/** Datagrams whose first byte is below this are beacon messages; every magic starts with `P` (0x50). */
export const BEACON_TYPE_LIMIT = 0x10

export const NODE_ID_BYTES = 4
export const NONCE_BYTES = 12
export const GCM_TAG_BYTES = 16
export const X25519_PUBLIC_KEY_BYTES = 32
export const ED25519_PUBLIC_KEY_BYTES = 32
export const SIGNATURE_BYTES = 64

/** Magic + sender + nonce: where a PILS frame's `ciphertext ‖ tag` starts. */
export const ENCRYPTED_HEADER_BYTES = MAGIC_BYTES + NODE_ID_BYTES + NONCE_BYTES
export const MIN_ENCRYPTED_FRAME_BYTES = ENCRYPTED_HEADER_BYTES + GCM_TAG_BYTES
export const KEY_EXCHANGE_FRAME_BYTES = MAGIC_BYTES + NODE_ID_BYTES + X25519_PUBLIC_KEY_BYTES
export const AUTH_KEY_EXCHANGE_FRAME_BYTES =
  KEY_EXCHANGE_FRAME_BYTES + ED25519_PUBLIC_KEY_BYTES + SIGNATURE_BYTES
export const PUNCH_FRAME_BYTES = MAGIC_BYTES

/**
 * PILF sizing (reference §8.7). A frame of at most 1223 bytes travels whole: 1232 (a datagram that fits the
 * IPv6 minimum MTU) minus the 9-byte beacon relay header. A longer one is cut into fragments whose PILF
 * frames are themselves at most 1223 bytes, at most 64 of them.
 */
export const MAX_UNFRAGMENTED_FRAME_BYTES = 1223
export const FRAGMENT_HEADER_BYTES = MAGIC_BYTES + NODE_ID_BYTES + 4 + 1 + 1
export const MAX_FRAGMENT_CHUNK_BYTES = MAX_UNFRAGMENTED_FRAME_BYTES - FRAGMENT_HEADER_BYTES
export const MAX_FRAGMENTS = 64

export interface PlainFrame {
  readonly _tag: "Plain"
  readonly packet: Packet
}

export interface EncryptedFrame {
  readonly _tag: "Encrypted"
  /** Claimed sender node ID; authenticated only by the AEAD (it is the AAD). */
  readonly sender: number
  readonly nonce: Uint8Array
  /** `ciphertext ‖ 16-byte tag`, the shape `SessionKeys` in src/crypto/session.ts seals and opens. */
  readonly sealed: Uint8Array
}

export interface KeyExchangeFrame {
  readonly _tag: "KeyExchange"
  readonly node: number
  readonly x25519: Uint8Array
}

export interface AuthKeyExchangeFrame {
  readonly _tag: "AuthKeyExchange"
  readonly node: number
  readonly x25519: Uint8Array
  /** The sender's identity key as it claims it; verification uses the registry's copy (reference §4.1). */
  readonly ed25519: Uint8Array
  readonly signature: Uint8Array
}

export interface PunchFrame {
  readonly _tag: "Punch"
}

export interface FragmentFrame {
  readonly _tag: "Fragment"
  readonly sender: number
  readonly fragId: number
  /** 0-based, below `count`. */
  readonly index: number
  /** 1 to `MAX_FRAGMENTS`. */
  readonly count: number
  /** At most `MAX_FRAGMENT_CHUNK_BYTES`. */
  readonly chunk: Uint8Array
}

export type TunnelFrame = PlainFrame | EncryptedFrame | KeyExchangeFrame | AuthKeyExchangeFrame | PunchFrame | FragmentFrame
export type TunnelFrameKind = TunnelFrame["_tag"]

/** What a datagram on the tunnel socket is, judged from its first bytes only (no validation of the rest). */
export type DatagramKind = "Beacon" | TunnelFrameKind | "Unknown"

const kindOfMagic = (magic: number): TunnelFrameKind | undefined => {
  switch (magic) {
    case TunnelMagic.PILT:
      return "Plain"
    case TunnelMagic.PILS:
      return "Encrypted"
    case TunnelMagic.PILK:
      return "KeyExchange"
    case TunnelMagic.PILA:
      return "AuthKeyExchange"
    case TunnelMagic.PILP:
      return "Punch"
    case TunnelMagic.PILF:
      return "Fragment"
    default:
      return undefined
  }
}

const viewOf = (bytes: Uint8Array): DataView => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/**
 * The socket reader's first switch: cheap (no allocation, no validation), so a receiver can drop what it
 * does not want (e.g. PILT while encryption is on) before paying for a decode. Unknown datagrams are
 * dropped silently by the reference daemon.
 */
export const classifyDatagram = (bytes: Uint8Array): DatagramKind => {
  if (bytes.byteLength === 0) return "Unknown"
  if (bytes[0]! < BEACON_TYPE_LIMIT) return "Beacon"
  if (bytes.byteLength < MAGIC_BYTES) return "Unknown"
  return kindOfMagic(viewOf(bytes).getUint32(0)) ?? "Unknown"
}

// ---------------------------------------------------------------------------------------------------------
// Decoding

/** The failure for a fixed-size frame of the wrong size, or `undefined` when the size is right. */
const wrongLength = (frame: string, bytes: Uint8Array, length: number): Result.Result<never, DecodeError> | undefined =>
  bytes.byteLength === length
    ? undefined
    : decodeFail(frame, bytes.byteLength < length ? "short" : "oversize", `expected ${length} bytes, got ${bytes.byteLength}`)

const decodeKeyExchange = (bytes: Uint8Array, view: DataView): Result.Result<KeyExchangeFrame, DecodeError> =>
  wrongLength("PILK", bytes, KEY_EXCHANGE_FRAME_BYTES) ??
    Result.succeed({
      _tag: "KeyExchange",
      node: view.getUint32(MAGIC_BYTES),
      x25519: bytes.subarray(MAGIC_BYTES + NODE_ID_BYTES)
    })

const OFF_ED25519 = KEY_EXCHANGE_FRAME_BYTES
const OFF_SIGNATURE = OFF_ED25519 + ED25519_PUBLIC_KEY_BYTES

const decodeAuthKeyExchange = (bytes: Uint8Array, view: DataView): Result.Result<AuthKeyExchangeFrame, DecodeError> =>
  wrongLength("PILA", bytes, AUTH_KEY_EXCHANGE_FRAME_BYTES) ??
    Result.succeed({
      _tag: "AuthKeyExchange",
      node: view.getUint32(MAGIC_BYTES),
      x25519: bytes.subarray(MAGIC_BYTES + NODE_ID_BYTES, OFF_ED25519),
      ed25519: bytes.subarray(OFF_ED25519, OFF_SIGNATURE),
      signature: bytes.subarray(OFF_SIGNATURE)
    })

const decodeEncrypted = (bytes: Uint8Array, view: DataView): Result.Result<EncryptedFrame, DecodeError> =>
  bytes.byteLength < MIN_ENCRYPTED_FRAME_BYTES
    ? decodeFail("PILS", "short", `${bytes.byteLength} bytes is less than the ${MIN_ENCRYPTED_FRAME_BYTES}-byte minimum`)
    : Result.succeed({
      _tag: "Encrypted",
      sender: view.getUint32(MAGIC_BYTES),
      nonce: bytes.subarray(MAGIC_BYTES + NODE_ID_BYTES, ENCRYPTED_HEADER_BYTES),
      sealed: bytes.subarray(ENCRYPTED_HEADER_BYTES)
    })

const OFF_FRAG_ID = MAGIC_BYTES + NODE_ID_BYTES
const OFF_FRAG_INDEX = OFF_FRAG_ID + 4
const OFF_FRAG_COUNT = OFF_FRAG_INDEX + 1

/**
 * Besides the layout, enforces the §8.7 limits a receiver relies on to bound reassembly memory: at most 64
 * fragments of at most 1209 bytes each, and an index inside the count. An empty chunk is allowed (useless
 * but harmless).
 */
const decodeFragment = (bytes: Uint8Array, view: DataView): Result.Result<FragmentFrame, DecodeError> => {
  if (bytes.byteLength < FRAGMENT_HEADER_BYTES) {
    return decodeFail("PILF", "short", `${bytes.byteLength} bytes is less than the ${FRAGMENT_HEADER_BYTES}-byte header`)
  }
  const index = view.getUint8(OFF_FRAG_INDEX)
  const count = view.getUint8(OFF_FRAG_COUNT)
  if (count === 0 || count > MAX_FRAGMENTS) return decodeFail("PILF", "invalid", `fragment count ${count} is not 1-${MAX_FRAGMENTS}`)
  if (index >= count) return decodeFail("PILF", "inconsistent", `fragment index ${index} is not below count ${count}`)
  const chunk = bytes.subarray(FRAGMENT_HEADER_BYTES)
  if (chunk.byteLength > MAX_FRAGMENT_CHUNK_BYTES) {
    return decodeFail("PILF", "oversize", `chunk of ${chunk.byteLength} bytes exceeds ${MAX_FRAGMENT_CHUNK_BYTES}`)
  }
  return Result.succeed({
    _tag: "Fragment",
    sender: view.getUint32(MAGIC_BYTES),
    fragId: view.getUint32(OFF_FRAG_ID),
    index,
    count,
    chunk
  })
}

const PUNCH: PunchFrame = { _tag: "Punch" }

/** Decodes one tunnel frame (a datagram that `classifyDatagram` did not call a beacon message). */
export const decodeTunnelFrame = (bytes: Uint8Array): Result.Result<TunnelFrame, DecodeError> => {
  if (bytes.byteLength < MAGIC_BYTES) return decodeFail("tunnel frame", "short", `${bytes.byteLength} bytes has no magic`)
  const view = viewOf(bytes)
  const magic = view.getUint32(0)
  switch (magic) {
    case TunnelMagic.PILT:
      return Result.map(decodePacket(bytes.subarray(MAGIC_BYTES)), (packet): PlainFrame => ({ _tag: "Plain", packet }))
    case TunnelMagic.PILS:
      return decodeEncrypted(bytes, view)
    case TunnelMagic.PILK:
      return decodeKeyExchange(bytes, view)
    case TunnelMagic.PILA:
      return decodeAuthKeyExchange(bytes, view)
    case TunnelMagic.PILP:
      return wrongLength("PILP", bytes, PUNCH_FRAME_BYTES) ?? Result.succeed(PUNCH)
    case TunnelMagic.PILF:
      return decodeFragment(bytes, view)
    default:
      return decodeFail("tunnel frame", "bad_magic", `unknown magic 0x${magic.toString(16).padStart(8, "0")}`)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Encoding

const allocateFrame = (magic: number, length: number): { readonly out: Uint8Array; readonly view: DataView } => {
  const out = new Uint8Array(length)
  const view = new DataView(out.buffer)
  view.setUint32(0, magic)
  return { out, view }
}

type Fields<F extends TunnelFrame> = Omit<F, "_tag">

/** PILT: the packet is written straight after the magic, with no intermediate packet buffer. */
export const encodePlainFrame = (f: Fields<PlainFrame>): Uint8Array => {
  const { out } = allocateFrame(TunnelMagic.PILT, MAGIC_BYTES + encodedPacketLength(f.packet))
  writePacket(out, MAGIC_BYTES, f.packet)
  return out
}

export const encodeEncryptedFrame = (f: Fields<EncryptedFrame>): Uint8Array => {
  requireInt("PILS", "sender", f.sender, 0, MAX_U32)
  requireByteLength("PILS", "nonce", f.nonce, NONCE_BYTES)
  if (f.sealed.byteLength < GCM_TAG_BYTES) {
    throw new RangeError(`PILS: sealed bytes (${f.sealed.byteLength}) cannot hold the ${GCM_TAG_BYTES}-byte tag`)
  }
  const { out, view } = allocateFrame(TunnelMagic.PILS, ENCRYPTED_HEADER_BYTES + f.sealed.byteLength)
  view.setUint32(MAGIC_BYTES, f.sender)
  out.set(f.nonce, MAGIC_BYTES + NODE_ID_BYTES)
  out.set(f.sealed, ENCRYPTED_HEADER_BYTES)
  return out
}

export const encodeKeyExchangeFrame = (f: Fields<KeyExchangeFrame>): Uint8Array => {
  requireInt("PILK", "node", f.node, 0, MAX_U32)
  requireByteLength("PILK", "X25519 key", f.x25519, X25519_PUBLIC_KEY_BYTES)
  const { out, view } = allocateFrame(TunnelMagic.PILK, KEY_EXCHANGE_FRAME_BYTES)
  view.setUint32(MAGIC_BYTES, f.node)
  out.set(f.x25519, MAGIC_BYTES + NODE_ID_BYTES)
  return out
}

export const encodeAuthKeyExchangeFrame = (f: Fields<AuthKeyExchangeFrame>): Uint8Array => {
  requireInt("PILA", "node", f.node, 0, MAX_U32)
  requireByteLength("PILA", "X25519 key", f.x25519, X25519_PUBLIC_KEY_BYTES)
  requireByteLength("PILA", "Ed25519 key", f.ed25519, ED25519_PUBLIC_KEY_BYTES)
  requireByteLength("PILA", "signature", f.signature, SIGNATURE_BYTES)
  const { out, view } = allocateFrame(TunnelMagic.PILA, AUTH_KEY_EXCHANGE_FRAME_BYTES)
  view.setUint32(MAGIC_BYTES, f.node)
  out.set(f.x25519, MAGIC_BYTES + NODE_ID_BYTES)
  out.set(f.ed25519, OFF_ED25519)
  out.set(f.signature, OFF_SIGNATURE)
  return out
}

export const encodePunchFrame = (): Uint8Array => allocateFrame(TunnelMagic.PILP, PUNCH_FRAME_BYTES).out

export const encodeFragmentFrame = (f: Fields<FragmentFrame>): Uint8Array => {
  requireInt("PILF", "sender", f.sender, 0, MAX_U32)
  requireInt("PILF", "fragment ID", f.fragId, 0, MAX_U32)
  requireInt("PILF", "count", f.count, 1, MAX_FRAGMENTS)
  requireInt("PILF", "index", f.index, 0, f.count - 1)
  requireInt("PILF", "chunk length", f.chunk.byteLength, 0, MAX_FRAGMENT_CHUNK_BYTES)
  const { out, view } = allocateFrame(TunnelMagic.PILF, FRAGMENT_HEADER_BYTES + f.chunk.byteLength)
  view.setUint32(MAGIC_BYTES, f.sender)
  view.setUint32(OFF_FRAG_ID, f.fragId)
  view.setUint8(OFF_FRAG_INDEX, f.index)
  view.setUint8(OFF_FRAG_COUNT, f.count)
  out.set(f.chunk, FRAGMENT_HEADER_BYTES)
  return out
}

/** Encodes any tunnel frame; the per-kind encoders above are the same thing without the dispatch. */
export const encodeTunnelFrame = (frame: TunnelFrame): Uint8Array => {
  switch (frame._tag) {
    case "Plain":
      return encodePlainFrame(frame)
    case "Encrypted":
      return encodeEncryptedFrame(frame)
    case "KeyExchange":
      return encodeKeyExchangeFrame(frame)
    case "AuthKeyExchange":
      return encodeAuthKeyExchangeFrame(frame)
    case "Punch":
      return encodePunchFrame()
    case "Fragment":
      return encodeFragmentFrame(frame)
  }
}

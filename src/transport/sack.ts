/**
 * Selective acknowledgments, carried in-band as the payload of a pure ACK (reference §8.4):
 *
 *   ASCII `SACK` ‖ count u8 (1..4) ‖ count × (left u32 BE, right u32 BE)
 *
 * where `left` is the first byte of a block the receiver holds out of order and `right` the first byte
 * after it. The bytes are kept as they are for compatibility; the ambiguity they create (a data segment
 * whose payload happens to start with a valid SACK option) is removed by two rules (DESIGN.md §2):
 *
 * 1. Receiver — `sackBlocksOf`: a segment is a *pure ACK carrying SACK* when its flags are exactly ACK
 *    (no SYN, FIN or RST), its payload decodes as a SACK option of exactly `5 + 8·count` bytes, and every
 *    block is one an honest receiver could have sent in that very segment: `ack < left < right ≤ snd.nxt`
 *    (above the cumulative ACK the segment carries, and within what we have sent). Such a segment
 *    occupies no sequence space and its payload is never delivered. Anything else with a payload is data.
 * 2. Sender — `mustSendFirstByteAlone`: our sender never emits a data segment whose payload the Go
 *    receiver (which accepts any payload *starting* with a decodable option) would take for SACK: when the
 *    next segment would start like that, its first byte goes alone in a 1-byte segment, which no decoder
 *    can read as SACK, and the rest follows in the next segment. So our data is never misread by anyone,
 *    and rule 1 only has to untangle data from old Go senders, where the block check makes a collision
 *    need app bytes that name our own in-flight sequence numbers.
 */
import { Result } from "effect"
import { type DecodeError, decodeFail } from "../protocol/errors.ts"
import { PacketFlag, seqGt, seqLe, seqLt } from "../protocol/packet.ts"
import type { Segment } from "./segment.ts"

export interface SackBlock {
  /** First sequence number of the block. */
  readonly left: number
  /** First sequence number after the block. */
  readonly right: number
}

export const MAX_SACK_BLOCKS = 4
const MAGIC = [0x53, 0x41, 0x43, 0x4b] // "SACK"
const HEADER_BYTES = 5
const BLOCK_BYTES = 8
const FRAME = "sack"

export const sackOptionLength = (count: number): number => HEADER_BYTES + BLOCK_BYTES * count

const startsWithMagic = (bytes: Uint8Array): boolean =>
  bytes.byteLength >= MAGIC.length &&
  bytes[0] === MAGIC[0] && bytes[1] === MAGIC[1] && bytes[2] === MAGIC[2] && bytes[3] === MAGIC[3]

/** Encodes up to `MAX_SACK_BLOCKS` blocks (extra blocks are left out, as the reference does). */
export const encodeSack = (blocks: ReadonlyArray<SackBlock>): Uint8Array => {
  const count = Math.min(blocks.length, MAX_SACK_BLOCKS)
  if (count === 0) throw new RangeError(`${FRAME}: at least one block is required`)
  const out = new Uint8Array(sackOptionLength(count))
  out.set(MAGIC, 0)
  out[4] = count
  const view = new DataView(out.buffer)
  for (let i = 0; i < count; i++) {
    const block = blocks[i] as SackBlock
    view.setUint32(HEADER_BYTES + i * BLOCK_BYTES, block.left >>> 0)
    view.setUint32(HEADER_BYTES + i * BLOCK_BYTES + 4, block.right >>> 0)
  }
  return out
}

/** Strict decoder: magic, count 1..4 and exactly the bytes that count implies. */
export const decodeSack = (payload: Uint8Array): Result.Result<ReadonlyArray<SackBlock>, DecodeError> => {
  if (payload.byteLength < HEADER_BYTES) return decodeFail(FRAME, "short", `${payload.byteLength} bytes`)
  if (!startsWithMagic(payload)) return decodeFail(FRAME, "bad_magic", "payload does not start with SACK")
  const count = payload[4] as number
  if (count < 1 || count > MAX_SACK_BLOCKS) return decodeFail(FRAME, "invalid", `block count ${count}`)
  const expected = sackOptionLength(count)
  if (payload.byteLength !== expected) {
    return decodeFail(FRAME, "inconsistent", `${count} blocks need ${expected} bytes, got ${payload.byteLength}`)
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  const blocks: Array<SackBlock> = []
  for (let i = 0; i < count; i++) {
    blocks.push({
      left: view.getUint32(HEADER_BYTES + i * BLOCK_BYTES),
      right: view.getUint32(HEADER_BYTES + i * BLOCK_BYTES + 4)
    })
  }
  return Result.succeed(blocks)
}

/**
 * Receiver rule (module doc, rule 1): the SACK blocks of `segment` if it is a pure ACK carrying SACK,
 * `undefined` if its payload (if any) is data. `sndNxt` is the receiving connection's next send sequence.
 */
export const sackBlocksOf = (segment: Segment, sndNxt: number): ReadonlyArray<SackBlock> | undefined => {
  if (segment.flags !== PacketFlag.ACK || !startsWithMagic(segment.payload)) return undefined
  const decoded = decodeSack(segment.payload)
  if (Result.isFailure(decoded)) return undefined
  for (const block of decoded.success) {
    if (!(seqGt(block.left, segment.ack) && seqLt(block.left, block.right) && seqLe(block.right, sndNxt))) {
      return undefined
    }
  }
  return decoded.success
}

/**
 * Sender rule (module doc, rule 2): whether a data payload starting with `head` (the next bytes to send,
 * at least as many as the segment would carry) would be read as SACK by a receiver that, like the Go
 * daemon, accepts any payload that starts with a decodable option.
 */
export const mustSendFirstByteAlone = (head: Uint8Array, segmentLength: number): boolean => {
  if (segmentLength < sackOptionLength(1) || !startsWithMagic(head)) return false
  const count = head[4] as number
  return count >= 1 && count <= MAX_SACK_BLOCKS && segmentLength >= sackOptionLength(count)
}

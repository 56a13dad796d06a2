/**
 * The receive side of a stream: turns segments that arrive in any order, duplicated or overlapping, into
 * the byte stream in order, exactly once (reference §8.4), and says what to acknowledge.
 *
 * - `next` (rcv.nxt) is the cumulative ACK: the first byte not yet received in order. The peer's FIN takes
 *   one sequence number and is consumed only once every byte before it has arrived, so an early FIN (it
 *   overtook a lost segment) is remembered and never cuts the stream short.
 * - Out-of-order data is held in a buffer bounded to `OUT_OF_ORDER_CAPACITY` segments. The bound equals the
 *   largest window we advertise counted in full segments, so one loss never costs the rest of a window
 *   (the reference's 128-segment buffer did, §13). Held ranges never overlap: a new segment is trimmed
 *   against its neighbours and replaces any it covers.
 * - Memory: delivered bytes the application has not read yet (`unreadBytes`, released by `consume`) and
 *   held bytes share one receive buffer of `bufferBytes`. The window we advertise is the free part of it in
 *   `WINDOW_UNIT_BYTES` units (an explicit 0 is a real zero window, reference §3.1 "new" semantics). We
 *   accept bytes up to one unit past the advertised right edge, because the Go sender checks its window
 *   before sending a whole segment and may overshoot by one; anything further is refused. So a receiver
 *   holds at most `bufferBytes + WINDOW_UNIT_BYTES` whatever the peer sends.
 */
import { seqAdd, seqDiff, seqGt, seqLe, seqLt } from "../protocol/packet.ts"
import { MAX_SACK_BLOCKS, type SackBlock } from "./sack.ts"
import { MAX_WINDOW_FIELD, WINDOW_UNIT_BYTES } from "./segment.ts"

export const OUT_OF_ORDER_CAPACITY = 1024
export const RECEIVE_BUFFER_BYTES = OUT_OF_ORDER_CAPACITY * WINDOW_UNIT_BYTES

/**
 * What one segment did:
 * - `in_order`: advanced the cumulative ACK and nothing is held out of order (a delayed ACK is fine);
 * - `gap_filled`: advanced the cumulative ACK while data was held (acknowledge at once, RFC 5681 §4.2);
 * - `out_of_order`: stored beyond a gap (acknowledge at once, with SACK);
 * - `duplicate`: nothing new (acknowledge at once: the sender may have lost our ACK);
 * - `refused`: beyond what the buffer may hold (acknowledge at once; the sender will retransmit).
 */
export type ReceiveVerdict = "in_order" | "gap_filled" | "out_of_order" | "duplicate" | "refused"

interface Held {
  readonly seq: number
  readonly data: Uint8Array
}

const endOf = (held: Held): number => seqAdd(held.seq, held.data.byteLength)

export interface ReassemblyOptions {
  readonly bufferBytes?: number
  readonly outOfOrderCapacity?: number
}

export class Reassembly {
  readonly bufferBytes: number
  readonly outOfOrderCapacity: number
  #next: number
  readonly #held: Array<Held> = []
  #heldBytes = 0
  #unread = 0
  #finSeq: number | undefined = undefined
  #finReceived = false
  /** Start of the most recently stored out-of-order range: its block goes first in a SACK (RFC 2018 §4). */
  #lastStored: number | undefined = undefined

  constructor(next: number, options: ReassemblyOptions = {}) {
    this.#next = next >>> 0
    this.bufferBytes = options.bufferBytes ?? RECEIVE_BUFFER_BYTES
    this.outOfOrderCapacity = options.outOfOrderCapacity ?? OUT_OF_ORDER_CAPACITY
  }

  /** rcv.nxt: the cumulative acknowledgment to send. */
  get next(): number {
    return this.#next
  }
  /** The peer's FIN has been consumed in order: the stream has ended. */
  get finReceived(): boolean {
    return this.#finReceived
  }
  get heldSegments(): number {
    return this.#held.length
  }
  get heldBytes(): number {
    return this.#heldBytes
  }
  get unreadBytes(): number {
    return this.#unread
  }

  /** Free receive buffer in window units, as the window field advertises it. */
  get windowUnits(): number {
    const free = Math.max(0, this.bufferBytes - this.#unread)
    return Math.min(MAX_WINDOW_FIELD, Math.floor(free / WINDOW_UNIT_BYTES))
  }

  /** The application has taken `bytes` delivered bytes: they no longer occupy the buffer. */
  consume(bytes: number): void {
    this.#unread -= Math.min(Math.max(0, bytes), this.#unread)
  }

  /**
   * Takes a segment's data (`seq`, `data`) and FIN flag. Bytes that become deliverable in order are
   * appended to `delivered` (views of the segments' payloads, not copies).
   */
  receive(seq: number, data: Uint8Array, fin: boolean, delivered: Array<Uint8Array>): ReceiveVerdict {
    if (this.#finReceived) return "duplicate"
    const limit = seqAdd(this.#next, Math.max(0, this.bufferBytes + WINDOW_UNIT_BYTES - this.#unread))
    const end = seqAdd(seq, data.byteLength)
    let finRecorded = false
    if (fin && this.#finSeq === undefined && !seqLt(end, this.#next) && seqLe(end, limit)) {
      this.#finSeq = end
      finRecorded = true
    }

    // Clip to [rcv.nxt, min(limit, FIN)): what is left is new data we may hold.
    let start = seq
    let bytes = data
    const stop = this.#finSeq !== undefined && seqLt(this.#finSeq, limit) ? this.#finSeq : limit
    if (seqLt(start, this.#next)) {
      const stale = seqDiff(this.#next, start)
      bytes = stale >= bytes.byteLength ? bytes.subarray(0, 0) : bytes.subarray(stale)
      start = this.#next
    }
    const beyondStop = seqDiff(seqAdd(start, bytes.byteLength), stop)
    const clippedAtLimit = beyondStop > 0 && stop === limit
    if (beyondStop > 0) bytes = bytes.subarray(0, Math.max(0, bytes.byteLength - beyondStop))

    if (bytes.byteLength === 0) {
      if (this.#consumeFin()) return this.#held.length > 0 ? "gap_filled" : "in_order"
      if (finRecorded) return "out_of_order"
      return clippedAtLimit ? "refused" : "duplicate"
    }
    if (start === this.#next) {
      const hadHeld = this.#held.length > 0
      this.#deliver(bytes, delivered)
      this.#pullHeld(delivered)
      this.#consumeFin()
      return hadHeld ? "gap_filled" : "in_order"
    }
    return this.#hold(start, bytes)
  }

  /**
   * Up to `MAX_SACK_BLOCKS` blocks describing the held data: the block holding the most recently stored
   * segment first (RFC 2018 §4, so every block is reported eventually), then the others lowest first.
   * Empty when nothing is held.
   */
  sackBlocks(): Array<SackBlock> {
    const held = this.#held
    const recentSeq = this.#lastStored
    const others: Array<SackBlock> = []
    let recent: SackBlock | undefined = undefined
    let i = 0
    while (i < held.length) {
      const left = (held[i] as Held).seq
      let right = endOf(held[i] as Held)
      for (i++; i < held.length && (held[i] as Held).seq === right; i++) right = endOf(held[i] as Held)
      if (recentSeq !== undefined && !seqLt(recentSeq, left) && seqLt(recentSeq, right)) recent = { left, right }
      else if (others.length < MAX_SACK_BLOCKS) others.push({ left, right })
      const recentSettled = recent !== undefined || recentSeq === undefined || seqLt(recentSeq, right)
      if (others.length === MAX_SACK_BLOCKS && recentSettled) break
    }
    if (recent === undefined) return others
    others.length = Math.min(others.length, MAX_SACK_BLOCKS - 1)
    others.unshift(recent)
    return others
  }

  #deliver(bytes: Uint8Array, delivered: Array<Uint8Array>): void {
    delivered.push(bytes)
    this.#next = seqAdd(this.#next, bytes.byteLength)
    this.#unread += bytes.byteLength
  }

  #pullHeld(delivered: Array<Uint8Array>): void {
    while (this.#held.length > 0) {
      const first = this.#held[0] as Held
      if (seqGt(first.seq, this.#next)) return
      this.#held.shift()
      this.#heldBytes -= first.data.byteLength
      const overlap = seqDiff(this.#next, first.seq)
      if (overlap < first.data.byteLength) this.#deliver(first.data.subarray(overlap), delivered)
    }
  }

  #consumeFin(): boolean {
    if (this.#finSeq === undefined || this.#finReceived || this.#next !== this.#finSeq) return false
    this.#next = seqAdd(this.#next, 1)
    this.#finReceived = true
    return true
  }

  /** Stores `[start, start + bytes)` (start > rcv.nxt) without overlapping what is already held. */
  #hold(start: number, bytes: Uint8Array): ReceiveVerdict {
    const held = this.#held
    // First held range starting after `start`, by binary search on offsets from rcv.nxt.
    const offset = seqDiff(start, this.#next)
    let lo = 0
    let hi = held.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (seqDiff((held[mid] as Held).seq, this.#next) <= offset) lo = mid + 1
      else hi = mid
    }
    const index = lo
    let from = start
    let piece = bytes
    const before = held[index - 1]
    if (before !== undefined) {
      const overlap = seqDiff(endOf(before), from)
      if (overlap >= piece.byteLength) return "duplicate"
      if (overlap > 0) {
        piece = piece.subarray(overlap)
        from = endOf(before)
      }
    }
    let covered = 0
    while (index + covered < held.length) {
      const after = held[index + covered] as Held
      const pieceEnd = seqAdd(from, piece.byteLength)
      if (!seqLt(after.seq, pieceEnd)) break
      if (seqLe(endOf(after), pieceEnd)) {
        covered++
        continue
      }
      piece = piece.subarray(0, seqDiff(after.seq, from))
      break
    }
    if (piece.byteLength === 0) return "duplicate"
    if (covered === 0 && held.length >= this.outOfOrderCapacity) return "refused"
    for (let i = 0; i < covered; i++) this.#heldBytes -= (held[index + i] as Held).data.byteLength
    held.splice(index, covered, { seq: from, data: piece })
    this.#heldBytes += piece.byteLength
    this.#lastStored = from
    return "out_of_order"
  }
}

/**
 * The sender's scoreboard: every segment sent and not yet cumulatively acknowledged, in sequence order,
 * with what SACK and loss detection know about it (RFC 6675).
 *
 * - `sacked`: the receiver holds it (a SACK block covers it entirely). Never retransmitted, except after a
 *   timeout: then every SACK mark is cleared because the receiver may have reneged (RFC 2018 §8).
 * - `lost`: presumed dropped — `DUP_THRESHOLD` SACKed segments lie above it (RFC 6675 IsLost), it is the
 *   first outstanding segment when fast recovery starts or after a partial ACK (NewReno), or the
 *   retransmission timer expired (everything outstanding).
 * - `retransmitted`: sent again since it was last marked lost.
 *
 * `pipe` is RFC 6675's estimate of what is in the network, kept incrementally: each segment not SACKed
 * counts once unless it is lost, plus once more if retransmitted. The sender may transmit while
 * `pipe + length ≤ cwnd`.
 *
 * Invariant used to keep loss marking amortized O(1) per segment: below a `lost` segment every segment is
 * `lost` or `sacked` (marking always proceeds from a point down to the head or to an already lost segment).
 */
import { seqAdd, seqDiff, seqLe, seqLt } from "../protocol/packet.ts"
import type { SackBlock } from "./sack.ts"

/** RFC 6675 DupThresh: SACKed segments above a hole that make it lost. */
export const DUP_THRESHOLD = 3

export interface SentSegment {
  /** First sequence number (advances if a partial ACK trims the segment). */
  seq: number
  payload: Uint8Array
  /** SYN and FIN bits this segment carries (0 for plain data). */
  readonly controlFlags: number
  /** Sequence space: payload bytes plus one for SYN and one for FIN. */
  length: number
  readonly firstSentAt: number
  lastSentAt: number
  /** Times sent, first transmission included. */
  transmissions: number
  /** Retransmissions by the retransmission timer: the ones the retransmission budget counts. */
  timeoutRetransmits: number
  sacked: boolean
  everSacked: boolean
  lost: boolean
  retransmitted: boolean
}

export interface AckOutcome {
  /** Sequence units newly acknowledged. */
  readonly ackedLength: number
  /**
   * The newest segment this ACK removed entirely, if the ACK can only have been caused by it or its
   * neighbours: every segment it removed was sent once and never SACKed (Karn's rule over the whole
   * range). An ACK that jumps over a hole just filled by a retransmission would otherwise time the
   * newest segment from its send to the hole's repair, which inflated SRTT to seconds under loss.
   */
  readonly rttCandidate: SentSegment | undefined
}

const endOf = (segment: SentSegment): number => seqAdd(segment.seq, segment.length)

const inPipe = (s: SentSegment): number => s.sacked ? 0 : (s.lost ? 0 : s.length) + (s.retransmitted ? s.length : 0)

const COMPACT_AFTER = 256

export class RetransmitQueue {
  /** Segments in sequence order; the live ones start at `#first`. */
  #segments: Array<SentSegment> = []
  #first = 0
  #outstanding = 0
  #pipe = 0
  /** Index from which `nextLost` searches; no retransmittable lost segment lies below it. */
  #lostCursor = 0
  /** End of the highest SACKed segment, if any. */
  #highestSacked: number | undefined = undefined

  get size(): number {
    return this.#segments.length - this.#first
  }
  get isEmpty(): boolean {
    return this.size === 0
  }
  get head(): SentSegment | undefined {
    return this.#segments[this.#first]
  }
  /** Sequence units sent and not cumulatively acknowledged (RFC 5681 FlightSize). */
  get outstanding(): number {
    return this.#outstanding
  }
  /** RFC 6675 pipe, in sequence units. */
  get pipe(): number {
    return this.#pipe
  }

  push(seq: number, payload: Uint8Array, controlFlags: number, length: number, now: number): SentSegment {
    const segment: SentSegment = {
      seq,
      payload,
      controlFlags,
      length,
      firstSentAt: now,
      lastSentAt: now,
      transmissions: 1,
      timeoutRetransmits: 0,
      sacked: false,
      everSacked: false,
      lost: false,
      retransmitted: false
    }
    this.#segments.push(segment)
    this.#outstanding += length
    this.#pipe += length
    return segment
  }

  /** Removes what the cumulative ACK `ack` covers; a segment it cuts in the middle is trimmed. */
  acknowledge(ack: number): AckOutcome {
    let ackedLength = 0
    let newestAcked: SentSegment | undefined = undefined
    let ambiguous = false
    while (this.#first < this.#segments.length) {
      const head = this.#segments[this.#first] as SentSegment
      if (seqLe(endOf(head), ack)) {
        this.#pipe -= inPipe(head)
        this.#outstanding -= head.length
        ackedLength += head.length
        newestAcked = head
        ambiguous ||= head.transmissions > 1 || head.everSacked
        this.#first++
        continue
      }
      const cut = seqDiff(ack, head.seq)
      if (cut > 0 && cut <= head.payload.byteLength) {
        this.#update(head, () => {
          head.seq = ack
          head.payload = head.payload.subarray(cut)
          head.length -= cut
        })
        this.#outstanding -= cut
        ackedLength += cut
      }
      break
    }
    if (this.#lostCursor < this.#first) this.#lostCursor = this.#first
    if (this.isEmpty || (this.#highestSacked !== undefined && seqLe(this.#highestSacked, ack))) {
      this.#highestSacked = undefined
    }
    this.#compact()
    return { ackedLength, rttCandidate: ambiguous ? undefined : newestAcked }
  }

  /** Marks the segments the blocks cover entirely as SACKed. Returns how many were newly marked. */
  applySack(blocks: ReadonlyArray<SackBlock>): number {
    let marked = 0
    for (const block of blocks) {
      for (let i = this.#indexAtOrAfter(block.left); i < this.#segments.length; i++) {
        const segment = this.#segments[i] as SentSegment
        if (!seqLe(endOf(segment), block.right)) break
        if (segment.sacked) continue
        this.#update(segment, () => {
          segment.sacked = true
          segment.everSacked = true
        })
        marked++
        const end = endOf(segment)
        if (this.#highestSacked === undefined || seqLt(this.#highestSacked, end)) this.#highestSacked = end
      }
    }
    return marked
  }

  /**
   * RFC 6675 IsLost over the scoreboard: marks every segment with at least `DUP_THRESHOLD` SACKed segments
   * above it. Returns whether the head is (now) lost.
   */
  markLostBySack(): boolean {
    if (this.#highestSacked === undefined) return this.head?.lost ?? false
    let sackedAbove = 0
    for (let i = this.#indexAtOrAfter(this.#highestSacked) - 1; i >= this.#first; i--) {
      const segment = this.#segments[i] as SentSegment
      if (segment.sacked) {
        sackedAbove++
        continue
      }
      if (sackedAbove < DUP_THRESHOLD) continue
      if (segment.lost) break
      this.#markLost(segment, i)
    }
    return this.head?.lost ?? false
  }

  /** NewReno: the head is presumed lost (fast retransmit, or a partial ACK during recovery). */
  markHeadLost(): void {
    const head = this.head
    if (head !== undefined && !head.sacked && !head.lost) this.#markLost(head, this.#first)
  }

  /** The retransmission timer expired: forget SACK marks (RFC 2018 §8) and presume everything lost. */
  markAllLost(): void {
    for (let i = this.#first; i < this.#segments.length; i++) {
      const segment = this.#segments[i] as SentSegment
      segment.sacked = false
      segment.lost = true
      segment.retransmitted = false
    }
    this.#pipe = 0
    this.#highestSacked = undefined
    this.#lostCursor = this.#first
  }

  /** RFC 6675 NextSeg rule 1: the first lost segment not yet retransmitted and not SACKed. */
  nextLost(): SentSegment | undefined {
    for (; this.#lostCursor < this.#segments.length; this.#lostCursor++) {
      const segment = this.#segments[this.#lostCursor] as SentSegment
      if (segment.lost && !segment.retransmitted && !segment.sacked) return segment
      // Below a lost segment everything is lost or SACKed, so a segment that is neither has none above.
      if (!segment.lost && !segment.sacked) return undefined
    }
    return undefined
  }

  /** Records that `segment` was sent again at `now`. */
  noteRetransmit(segment: SentSegment, now: number, byTimer: boolean): void {
    this.#update(segment, () => {
      segment.transmissions++
      segment.lastSentAt = now
      if (segment.lost) segment.retransmitted = true
      if (byTimer) segment.timeoutRetransmits++
    })
  }

  #markLost(segment: SentSegment, index: number): void {
    this.#update(segment, () => {
      segment.lost = true
      segment.retransmitted = false
    })
    if (index < this.#lostCursor) this.#lostCursor = index
  }

  #update(segment: SentSegment, mutate: () => void): void {
    this.#pipe -= inPipe(segment)
    mutate()
    this.#pipe += inPipe(segment)
  }

  /** Index of the first live segment whose sequence is at or after `seq` (binary search). */
  #indexAtOrAfter(seq: number): number {
    const head = this.head
    if (head === undefined) return this.#segments.length
    const target = seqDiff(seq, head.seq)
    let lo = this.#first
    let hi = this.#segments.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (seqDiff((this.#segments[mid] as SentSegment).seq, head.seq) < target) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  #compact(): void {
    if (this.#first < COMPACT_AFTER || this.#first * 2 < this.#segments.length) return
    this.#segments = this.#segments.slice(this.#first)
    this.#lostCursor -= this.#first
    this.#first = 0
  }
}

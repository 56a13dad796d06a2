/**
 * Congestion window arithmetic (RFC 5681 with appropriate byte counting, RFC 3465) and the loss-recovery
 * phase it depends on. Sizes are bytes of sequence space.
 *
 * Constants from reference §8.2: initial window 10 segments, maximum window 4 MiB, initial ssthresh half of
 * the maximum. Phases:
 *
 * - `open`: slow start below ssthresh (cwnd += min(acked, 2·MSS), the RFC 3465 limit L = 2 so a stretch ACK
 *   after a hole is filled cannot burst), congestion avoidance above (cwnd += max(1, MSS·acked/cwnd)).
 * - `fast_recovery`: entered on the 3rd duplicate *pure* ACK (the caller decides what counts: data-carrying
 *   ACKs never do) or when SACK information shows the first outstanding segment lost. ssthresh =
 *   max(FlightSize/2, 2·MSS). Ends when the cumulative ACK reaches the recovery point (snd.nxt at entry).
 * - `timeout_recovery`: after an RTO. ssthresh = max(FlightSize/2, 2·MSS) on the first timeout of an
 *   episode and held on repeated ones (RFC 5681 §3.1 note), cwnd = 1 MSS (RFC 5681's loss window; the
 *   reference used the initial window, which re-sends ten segments into a path that just lost everything).
 *   Slow start applies; ends when the cumulative ACK reaches snd.nxt as of the last timeout (RFC 6582
 *   "recover"), and duplicate ACKs cannot start a fast recovery before that.
 *
 * Why there is no Reno inflation (cwnd = ssthresh + 3·MSS, +MSS per further duplicate ACK, deflation at the
 * end) although the reference has it: our sender keeps a SACK scoreboard and limits what it sends with
 * RFC 6675's `pipe` (see `retransmit-queue.ts`), from which every SACKed or lost segment already leaves.
 * Inflating cwnd for the same departures would count each of them twice. So recovery follows RFC 6675:
 * cwnd = ssthresh for the whole episode, nothing to inflate, nothing to deflate — and the whole family of
 * inflation bugs listed in reference §13 (inflation outside recovery, double inflation on the 3rd duplicate
 * ACK of an episode, re-halving ssthresh inside an episode, inflation during timeout recovery…) has no
 * state left to go wrong in: ssthresh changes only when an episode starts.
 */
import { seqLe } from "../protocol/packet.ts"

export const INITIAL_WINDOW_SEGMENTS = 10
export const MAX_CWND_BYTES = 4 * 1024 * 1024
export const DUP_ACK_THRESHOLD = 3
/** RFC 3465's L: slow start grows by at most this many segments per ACK. */
export const ABC_LIMIT_SEGMENTS = 2

export type RecoveryPhase = "open" | "fast_recovery" | "timeout_recovery"

/** What a new cumulative ACK did to the recovery phase. */
export type AckEffect = "normal" | "partial" | "recovered"

export interface CongestionOptions {
  readonly initialWindow?: number
  readonly maxWindow?: number
}

export class CongestionControl {
  readonly mss: number
  readonly maxWindow: number
  #cwnd: number
  #ssthresh: number
  #phase: RecoveryPhase = "open"
  #recoveryPoint = 0
  #duplicateAcks = 0

  constructor(mss: number, options: CongestionOptions = {}) {
    this.mss = mss
    this.maxWindow = options.maxWindow ?? MAX_CWND_BYTES
    this.#cwnd = Math.min(options.initialWindow ?? INITIAL_WINDOW_SEGMENTS * mss, this.maxWindow)
    this.#ssthresh = Math.floor(this.maxWindow / 2)
  }

  get cwnd(): number {
    return this.#cwnd
  }
  get ssthresh(): number {
    return this.#ssthresh
  }
  get phase(): RecoveryPhase {
    return this.#phase
  }
  get inRecovery(): boolean {
    return this.#phase !== "open"
  }
  /** snd.nxt when the current episode started (meaningful only in recovery). */
  get recoveryPoint(): number {
    return this.#recoveryPoint
  }
  get duplicateAcks(): number {
    return this.#duplicateAcks
  }

  /** The cumulative ACK advanced by `ackedBytes` to `ack`. */
  onNewAck(ackedBytes: number, ack: number): AckEffect {
    this.#duplicateAcks = 0
    switch (this.#phase) {
      case "open":
        this.#grow(ackedBytes)
        return "normal"
      case "fast_recovery":
        if (!seqLe(this.#recoveryPoint, ack)) return "partial"
        this.#phase = "open"
        return "recovered"
      case "timeout_recovery":
        this.#grow(ackedBytes)
        if (!seqLe(this.#recoveryPoint, ack)) return "partial"
        this.#phase = "open"
        return "recovered"
    }
  }

  /**
   * A duplicate pure ACK arrived while data was outstanding. Returns true when this one starts fast
   * recovery (the caller then retransmits the first outstanding segment at once).
   */
  onDuplicateAck(flightSize: number, sndNxt: number): boolean {
    this.#duplicateAcks++
    if (this.#phase !== "open" || this.#duplicateAcks !== DUP_ACK_THRESHOLD) return false
    this.enterFastRecovery(flightSize, sndNxt)
    return true
  }

  /** Starts a fast-recovery episode (3rd duplicate ACK, or SACK shows the first segment lost). */
  enterFastRecovery(flightSize: number, sndNxt: number): void {
    if (this.#phase !== "open") return
    this.#ssthresh = this.#halved(flightSize)
    this.#cwnd = this.#ssthresh
    this.#phase = "fast_recovery"
    this.#recoveryPoint = sndNxt
  }

  /** The retransmission timer expired. */
  onTimeout(flightSize: number, sndNxt: number): void {
    if (this.#phase !== "timeout_recovery") this.#ssthresh = this.#halved(flightSize)
    this.#cwnd = this.mss
    this.#phase = "timeout_recovery"
    this.#recoveryPoint = sndNxt
    this.#duplicateAcks = 0
  }

  #halved(flightSize: number): number {
    return Math.max(Math.floor(flightSize / 2), 2 * this.mss)
  }

  #grow(ackedBytes: number): void {
    const increase = this.#cwnd < this.#ssthresh
      ? Math.min(ackedBytes, ABC_LIMIT_SEGMENTS * this.mss)
      : Math.max(1, Math.floor((this.mss * ackedBytes) / this.#cwnd))
    this.#cwnd = Math.min(this.#cwnd + increase, this.maxWindow)
  }
}

/**
 * One stream connection (reference §8.1–§8.4) as a pure state machine: no I/O, no clock, no timers. The
 * shell feeds it inputs — `dial` / `accept`, `write`, `consume`, `close`, `abort`, `receive(segment, now)`,
 * `tick(now)` — and each returns a `StreamStep`: segments to send (in order), bytes delivered to the
 * application (in order, exactly once), events (state changes, end of stream, writable again, typed
 * failures), and the one deadline at which the shell must call `tick` next. Mutable state lives inside the
 * instance; time is always an argument (milliseconds, any monotonic origin).
 *
 * Wire behaviour (compatible with the Go daemon):
 * - SYN and SYN-ACK carry sequence numbers and each take one; every later segment carries ACK; data
 *   segments are ACK segments with a payload; our FIN is FIN|ACK, takes one sequence number, and goes after
 *   every queued byte; pure ACKs carry seq = snd.nxt and, while we hold out-of-order data, a SACK option
 *   as payload (`sack.ts` states the rule that tells them from data).
 * - The initial sequence number defaults to 0 as in the reference: Go peers compare some sequence numbers
 *   without wrap-around (`pkt.Ack < sendSeq`, `pkt.Ack > 0`), which an ISN near 2^32 would break. The
 *   core itself is wrap-safe everywhere (its tests use random ISNs), so a shell that only talks to peers
 *   known to be wrap-safe may pass a random `isn` (what a random ISN buys: a late segment of an earlier
 *   connection on the same 4-tuple cannot land inside the new one's window).
 * - The listener goes to ESTABLISHED as soon as it has sent the SYN-ACK (reference §8.1), but sends no data
 *   before the SYN-ACK is acknowledged: a dialer still in SYN_SENT would drop it. The SYN-ACK is in the
 *   retransmission queue; a duplicate SYN is answered with the *original* SYN-ACK sequence number.
 * - Dial: SYN retransmitted after 250 ms, doubling to 8 s, 7 SYNs in all, then `dial_timeout`; an RST
 *   answers `connection_refused`.
 *
 * Close: TCP's half-close, with the reference's state names where they exist. `close()` queues our FIN
 * after the data (ESTABLISHED → FIN_WAIT, CLOSE_WAIT → LAST_ACK); the peer's FIN, once every byte before it
 * has arrived, ends the incoming stream (`peer_closed`; ESTABLISHED → CLOSE_WAIT, FIN_WAIT → CLOSING or
 * TIME_WAIT). TIME_WAIT (10 s) re-acknowledges retransmitted FINs and then reports CLOSED. An RST in
 * LAST_ACK or CLOSING after all our data was acknowledged is a clean close (the peer only forgot the final
 * ACK); in TIME_WAIT it is ignored; anywhere else it is `reset_by_peer`. A Go peer answers our FIN with
 * FIN|ACK at once and a Go closer drops data that arrives after its FIN; both interoperate with this.
 *
 * Sending: Nagle (unless `noDelay`): full segments go at once, a partial one goes if nothing is
 * outstanding, else after everything is acknowledged or 40 ms; `close()` flushes. The window is
 * min(cwnd, peer window) against RFC 6675 `pipe`. Unsent bytes are capped at 64 segments: `write` accepts
 * what fits and says `send_buffer_full`; a `writable` event follows once half the cap is free. At most
 * 1024 segments are outstanding.
 *
 * Loss recovery: RFC 6298 retransmission timer (`rtt.ts`), fast recovery on the 3rd duplicate pure ACK or
 * when SACK shows the first segment lost (`congestion.ts`), SACK-driven retransmission of holes
 * (`retransmit-queue.ts`). Each segment may be retransmitted by the timer 8 times; the 9th expiry sends
 * RST and fails with `retransmit_budget_exhausted`. Retransmissions clocked by ACKs never count.
 *
 * Receiving: `reassembly.ts`; ACK after 2 in-order segments or 40 ms, at once (with SACK) for anything
 * out of order, duplicated or filling a gap, and for a probe. The application releases buffer space with
 * `consume`; a window update is sent when the window reopens from zero or grows by a quarter.
 *
 * Probes: a probe is a pure ACK one below snd.nxt, sent only when nothing is outstanding — it is then one
 * below the peer's rcv.nxt, which a receiver answers at once (TCP's keepalive trick: the Go daemon's empty
 * ACK probe is never answered, so it cannot tell a live peer from a dead one). With data blocked by a zero
 * window: every 500 ms doubling to 30 s; if the window is still shut when the 30th probe's interval ends,
 * RST + `zero_window_timeout`. An idle ESTABLISHED connection probes every 30 s (keepalive); nothing
 * received for 120 s in any synchronized state but TIME_WAIT sends RST + `idle_timeout` (this also bounds
 * a half-closed connection whose application never closes).
 *
 * Not here: LISTEN and SYN_RECV (listening, admission and the accept queue belong to the shell and
 * `ports.ts`; the listener's connection starts ESTABLISHED). RSTs are accepted without a sequence check —
 * every segment arrives through an authenticated tunnel session, so there is no blind attacker to guard
 * against — and a segment acknowledging bytes never sent is dropped unanswered.
 */
import { Schema } from "effect"
import { PacketFlag, seqAdd, seqDiff, seqGt, seqLe, seqLt } from "../protocol/packet.ts"
import { CongestionControl } from "./congestion.ts"
import { Reassembly } from "./reassembly.ts"
import { RetransmitQueue, type SentSegment } from "./retransmit-queue.ts"
import { RttEstimator } from "./rtt.ts"
import { encodeSack, mustSendFirstByteAlone, type SackBlock, sackBlocksOf } from "./sack.ts"
import { DEFAULT_MSS, EMPTY_PAYLOAD, hasFlag, type Segment, WINDOW_UNIT_BYTES } from "./segment.ts"
import { SendBuffer } from "./send-buffer.ts"

export const SYN_INITIAL_RTO_MS = 250
export const SYN_MAX_RTO_MS = 8_000
export const SYN_ATTEMPTS = 7
export const DELAYED_ACK_MS = 40
export const DELAYED_ACK_SEGMENTS = 2
export const NAGLE_DELAY_MS = 40
export const PROBE_INITIAL_MS = 500
export const PROBE_MAX_MS = 30_000
export const ZERO_WINDOW_PROBE_LIMIT = 30
export const KEEPALIVE_INTERVAL_MS = 30_000
export const IDLE_TIMEOUT_MS = 120_000
export const TIME_WAIT_MS = 10_000
export const RETRANSMIT_BUDGET = 8
/** Sent-and-unacknowledged segments at most (reference: send buffer 1024). */
export const MAX_OUTSTANDING_SEGMENTS = 1024
/** Written-but-unsent bytes at most, in segments (reference: Nagle buffer cap 64 → `ErrSendBufFull`). */
export const SEND_BUFFER_SEGMENTS = 64

export type StreamState =
  | "CLOSED"
  | "SYN_SENT"
  | "ESTABLISHED"
  | "FIN_WAIT"
  | "CLOSE_WAIT"
  | "CLOSING"
  | "LAST_ACK"
  | "TIME_WAIT"

export const StreamFailure = Schema.Literals([
  "connection_refused", // RST in answer to our SYN
  "dial_timeout", // no SYN-ACK after SYN_ATTEMPTS SYNs
  "reset_by_peer", // RST on an open connection
  "retransmit_budget_exhausted", // a segment timed out RETRANSMIT_BUDGET + 1 times
  "idle_timeout", // nothing received for IDLE_TIMEOUT_MS
  "zero_window_timeout" // the peer's window stayed shut through ZERO_WINDOW_PROBE_LIMIT probes
])
export type StreamFailure = typeof StreamFailure.Type

export class StreamError extends Schema.TaggedError<StreamError>()("StreamError", {
  reason: StreamFailure,
  detail: Schema.String
}) {
  /** Machine-readable code, stable across releases. */
  get code(): string {
    return this.reason
  }
  override get message(): string {
    return this.detail
  }
}

export type StreamEvent =
  | { readonly type: "state_changed"; readonly from: StreamState; readonly to: StreamState }
  /** The peer's FIN arrived after all its data: the incoming byte stream is complete. */
  | { readonly type: "peer_closed" }
  /** A write was refused for lack of room earlier; there is room again. */
  | { readonly type: "writable" }
  /** The connection ended abnormally (followed by, or after, the change to CLOSED). */
  | { readonly type: "failed"; readonly error: StreamError }

export interface StreamStep {
  readonly state: StreamState
  readonly segments: ReadonlyArray<Segment>
  /** In-order application bytes: views of received payloads, valid as long as those are not reused. */
  readonly delivered: ReadonlyArray<Uint8Array>
  readonly events: ReadonlyArray<StreamEvent>
  /** When to call `tick` next; `undefined` when no timer is needed (always so once CLOSED). */
  readonly nextDeadline: number | undefined
}

export type WriteOutcome = "accepted" | "send_buffer_full" | "not_writable"

export interface WriteStep extends StreamStep {
  /** Bytes taken from the front of the write (copied); the caller keeps the rest. */
  readonly accepted: number
  readonly outcome: WriteOutcome
}

export interface StreamOptions {
  /** Largest payload per segment (default 4096). */
  readonly mss?: number
  /** Disable Nagle's algorithm. */
  readonly noDelay?: boolean
  /** Initial send sequence number (default 0, see the module doc). */
  readonly isn?: number
  /** Receive buffer, bytes (default 4 MiB = the 1024-segment window). */
  readonly receiveBufferBytes?: number
}

/** Per-connection figures, named as the reference's Info JSON `conn_list` rows (the shell adds id/ports/address). */
export interface StreamInfo {
  readonly state: StreamState
  readonly bytes_sent: number
  readonly bytes_recv: number
  readonly segs_sent: number
  readonly segs_recv: number
  /** Retransmissions by the retransmission timer. */
  readonly retransmits: number
  /** Retransmissions clocked by ACKs: fast retransmit, SACK holes, post-timeout recovery. */
  readonly fast_retx: number
  readonly dup_acks: number
  /** SACK blocks sent / received. */
  readonly sack_sent: number
  readonly sack_recv: number
  readonly cong_win: number
  readonly ssthresh: number
  /** RFC 6675 pipe, bytes. */
  readonly in_flight: number
  /** Segments sent and not yet acknowledged. */
  readonly unacked: number
  readonly ooo_buf: number
  readonly peer_recv_win: number
  readonly recv_win: number
  readonly srtt_ms: number
  readonly rttvar_ms: number
  readonly in_recovery: boolean
}

/** What the connection holds in memory right now (each has a cap; the property tests assert them). */
export interface StreamBufferUsage {
  readonly unsentBytes: number
  readonly outstandingSegments: number
  readonly outOfOrderSegments: number
  readonly outOfOrderBytes: number
  readonly unreadBytes: number
}

const NO_SEGMENTS: ReadonlyArray<Segment> = []
const NO_BYTES: ReadonlyArray<Uint8Array> = []
const NO_EVENTS: ReadonlyArray<StreamEvent> = []

/** Longest prefix `mustSendFirstByteAlone` looks at. */
const SACK_LOOKAHEAD = 5

const minDeadline = (a: number | undefined, b: number | undefined): number | undefined =>
  a === undefined ? b : b === undefined ? a : Math.min(a, b)

type Role = "dialer" | "listener"

export class StreamConnection {
  readonly mss: number
  readonly noDelay: boolean
  readonly #role: Role
  #state: StreamState = "CLOSED"

  // Send side. snd.una/snd.nxt; the SYN (dialer) or SYN-ACK (listener) takes `#iss`.
  readonly #iss: number
  #sndUna: number
  #sndNxt: number
  readonly #unsent = new SendBuffer()
  readonly #queue = new RetransmitQueue()
  readonly #cc: CongestionControl
  readonly #rtt = new RttEstimator()
  /** Peer window in units, and the segment that set it (RFC 793 SND.WL1 / SND.WL2). */
  #sndWnd = 0
  #sndWl1 = 0
  #sndWl2 = 0
  #finQueued = false
  #finSeq: number | undefined = undefined
  #finAcked = false
  #writerBlocked = false

  // Receive side.
  #irs = 0
  #rx: Reassembly
  readonly #receiveBufferBytes: number | undefined
  #unackedInOrder = 0
  #ackNow = false
  #lastAdvertised = 0

  // Timers (absolute deadlines, undefined = not armed).
  #synAttempts = 0
  #synFirstSentAt = 0
  #synRto = SYN_INITIAL_RTO_MS
  #synAt: number | undefined = undefined
  #rtoAt: number | undefined = undefined
  #delayedAckAt: number | undefined = undefined
  #nagleAt: number | undefined = undefined
  #nagleExpired = false
  #probeAt: number | undefined = undefined
  #persisting = false
  #probesSent = 0
  #probeInterval = PROBE_INITIAL_MS
  #keepaliveSentAt = 0
  #lastReceiveAt = 0
  #timeWaitAt: number | undefined = undefined

  // Counters.
  #bytesSent = 0
  #bytesRecv = 0
  #segsSent = 0
  #segsRecv = 0
  #retransmits = 0
  #fastRetx = 0
  #dupAcks = 0
  #sackSent = 0
  #sackRecv = 0

  // Outputs of the step in progress.
  #segments: Array<Segment> = []
  #delivered: Array<Uint8Array> = []
  #events: Array<StreamEvent> = []

  private constructor(role: Role, options: StreamOptions) {
    this.#role = role
    this.mss = options.mss ?? DEFAULT_MSS
    this.noDelay = options.noDelay ?? false
    this.#iss = (options.isn ?? 0) >>> 0
    this.#sndUna = this.#iss
    this.#sndNxt = seqAdd(this.#iss, 1)
    this.#cc = new CongestionControl(this.mss)
    this.#receiveBufferBytes = options.receiveBufferBytes
    this.#rx = this.#newReassembly(0)
  }

  /** Opens a connection: sends the SYN. */
  static dial(now: number, options: StreamOptions = {}): { readonly connection: StreamConnection; readonly step: StreamStep } {
    const connection = new StreamConnection("dialer", options)
    connection.#setState("SYN_SENT")
    connection.#sendSyn(now)
    return { connection, step: connection.#finishStep(now) }
  }

  /**
   * Answers a SYN (flags exactly SYN) on a listening port: sends the SYN-ACK and is ESTABLISHED at once.
   * The listener's admission checks (rate limits, caps, accept queue) are the shell's, before this.
   */
  static accept(
    syn: Segment,
    now: number,
    options: StreamOptions = {}
  ): { readonly connection: StreamConnection; readonly step: StreamStep } {
    if (syn.flags !== PacketFlag.SYN) throw new RangeError("accept: the segment is not a SYN")
    const connection = new StreamConnection("listener", options)
    connection.#irs = syn.seq
    connection.#rx = connection.#newReassembly(seqAdd(syn.seq, 1))
    connection.#sndWnd = syn.window
    connection.#sndWl1 = syn.seq
    connection.#sndWl2 = connection.#sndNxt
    connection.#lastReceiveAt = now
    connection.#queue.push(connection.#iss, EMPTY_PAYLOAD, PacketFlag.SYN, 1, now)
    connection.#emit(PacketFlag.SYN | PacketFlag.ACK, connection.#iss, EMPTY_PAYLOAD)
    connection.#rtoAt = now + connection.#rtt.rto
    connection.#setState("ESTABLISHED")
    return { connection, step: connection.#finishStep(now) }
  }

  get state(): StreamState {
    return this.#state
  }

  /** Queues application bytes (copied). Accepts what fits under the send buffer cap. */
  write(bytes: Uint8Array, now: number): WriteStep {
    const writable = this.#state === "SYN_SENT" || this.#state === "ESTABLISHED" || this.#state === "CLOSE_WAIT"
    if (!writable) return { ...this.#finishStep(now), accepted: 0, outcome: "not_writable" }
    const room = SEND_BUFFER_SEGMENTS * this.mss - this.#unsent.length
    const accepted = Math.max(0, Math.min(room, bytes.byteLength))
    this.#unsent.append(accepted === bytes.byteLength ? bytes : bytes.subarray(0, accepted))
    const full = accepted < bytes.byteLength
    if (full) this.#writerBlocked = true
    this.#pump(now)
    return { ...this.#finishStep(now), accepted, outcome: full ? "send_buffer_full" : "accepted" }
  }

  /** The application has taken `bytes` of the delivered data: frees receive buffer (may update the window). */
  consume(bytes: number, now: number): StreamStep {
    if (this.#state === "CLOSED") return this.#finishStep(now)
    this.#rx.consume(bytes)
    const window = this.#rx.windowUnits
    const significant = Math.max(1, Math.floor(this.#rx.bufferBytes / WINDOW_UNIT_BYTES / 4))
    if (this.#isSynchronized() && ((this.#lastAdvertised === 0 && window > 0) || window - this.#lastAdvertised >= significant)) {
      this.#ackNow = true
    }
    this.#flushAck()
    return this.#finishStep(now)
  }

  /** Graceful close: FIN after every queued byte. Aborts a dial in progress. */
  close(now: number): StreamStep {
    switch (this.#state) {
      case "SYN_SENT":
        this.#enterClosed()
        break
      case "ESTABLISHED":
        this.#finQueued = true
        this.#setState("FIN_WAIT")
        this.#pump(now)
        break
      case "CLOSE_WAIT":
        this.#finQueued = true
        this.#setState("LAST_ACK")
        this.#pump(now)
        break
      default:
        break
    }
    return this.#finishStep(now)
  }

  /** Abortive close (application gone, shutdown deadline): RST to the peer, CLOSED, no error reported. */
  abort(now: number): StreamStep {
    if (this.#isSynchronized() && this.#state !== "TIME_WAIT") this.#emitReset()
    if (this.#state !== "CLOSED") this.#enterClosed()
    return this.#finishStep(now)
  }

  receive(segment: Segment, now: number): StreamStep {
    if (this.#state === "SYN_SENT") this.#receiveInSynSent(segment, now)
    else if (this.#state !== "CLOSED") this.#receiveSynchronized(segment, now)
    return this.#finishStep(now)
  }

  /** Runs every timer due at `now`. */
  tick(now: number): StreamStep {
    if (this.#timeWaitAt !== undefined && now >= this.#timeWaitAt) {
      this.#enterClosed()
      return this.#finishStep(now)
    }
    if (this.#synAt !== undefined && now >= this.#synAt) {
      if (this.#synAttempts >= SYN_ATTEMPTS) {
        this.#fail("dial_timeout", `no SYN-ACK after ${SYN_ATTEMPTS} SYNs`, false)
        return this.#finishStep(now)
      }
      this.#synRto = Math.min(this.#synRto * 2, SYN_MAX_RTO_MS)
      this.#sendSyn(now)
    }
    const idleAt = this.#idleDeadline()
    if (idleAt !== undefined && now >= idleAt) {
      this.#fail("idle_timeout", `nothing received for ${IDLE_TIMEOUT_MS} ms`, true)
      return this.#finishStep(now)
    }
    if (this.#rtoAt !== undefined && now >= this.#rtoAt) {
      this.#onRetransmissionTimeout(now)
      if (this.#state === "CLOSED") return this.#finishStep(now)
    }
    if (this.#probeAt !== undefined && now >= this.#probeAt) {
      this.#onProbeTimer(now)
      if (this.#state === "CLOSED") return this.#finishStep(now)
    }
    if (this.#nagleAt !== undefined && now >= this.#nagleAt) {
      this.#nagleAt = undefined
      this.#nagleExpired = true
    }
    if (this.#delayedAckAt !== undefined && now >= this.#delayedAckAt) this.#ackNow = true
    this.#pump(now)
    this.#flushAck()
    return this.#finishStep(now)
  }

  /** The earliest armed deadline (what the last step returned). */
  get nextDeadline(): number | undefined {
    if (this.#state === "CLOSED") return undefined
    let next = minDeadline(this.#synAt, this.#rtoAt)
    next = minDeadline(next, this.#delayedAckAt)
    next = minDeadline(next, this.#nagleAt)
    next = minDeadline(next, this.#probeAt)
    next = minDeadline(next, this.#idleDeadline())
    return minDeadline(next, this.#timeWaitAt)
  }

  info(): StreamInfo {
    return {
      state: this.#state,
      bytes_sent: this.#bytesSent,
      bytes_recv: this.#bytesRecv,
      segs_sent: this.#segsSent,
      segs_recv: this.#segsRecv,
      retransmits: this.#retransmits,
      fast_retx: this.#fastRetx,
      dup_acks: this.#dupAcks,
      sack_sent: this.#sackSent,
      sack_recv: this.#sackRecv,
      cong_win: this.#cc.cwnd,
      ssthresh: this.#cc.ssthresh,
      in_flight: this.#queue.pipe,
      unacked: this.#queue.size,
      ooo_buf: this.#rx.heldSegments,
      peer_recv_win: this.#sndWnd * WINDOW_UNIT_BYTES,
      recv_win: this.#rx.windowUnits * WINDOW_UNIT_BYTES,
      srtt_ms: Math.round(this.#rtt.srtt ?? 0),
      rttvar_ms: Math.round(this.#rtt.rttvar),
      in_recovery: this.#cc.inRecovery
    }
  }

  usage(): StreamBufferUsage {
    return {
      unsentBytes: this.#unsent.length,
      outstandingSegments: this.#queue.size,
      outOfOrderSegments: this.#rx.heldSegments,
      outOfOrderBytes: this.#rx.heldBytes,
      unreadBytes: this.#rx.unreadBytes
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Receiving

  #receiveInSynSent(segment: Segment, now: number): void {
    if (hasFlag(segment, PacketFlag.RST)) {
      this.#fail("connection_refused", "the peer answered the SYN with RST", false)
      return
    }
    const synAck = PacketFlag.SYN | PacketFlag.ACK
    if ((segment.flags & synAck) !== synAck || segment.ack !== seqAdd(this.#iss, 1)) return
    this.#irs = segment.seq
    this.#rx = this.#newReassembly(seqAdd(segment.seq, 1))
    this.#sndUna = segment.ack
    if (this.#synAttempts === 1) this.#rtt.sample(now - this.#synFirstSentAt)
    this.#sndWnd = segment.window
    this.#sndWl1 = segment.seq
    this.#sndWl2 = segment.ack
    this.#synAt = undefined
    this.#lastReceiveAt = now
    this.#setState("ESTABLISHED")
    this.#ackNow = true
    this.#pump(now)
    this.#flushAck()
  }

  #receiveSynchronized(segment: Segment, now: number): void {
    if (hasFlag(segment, PacketFlag.RST)) {
      this.#onReset()
      return
    }
    if (hasFlag(segment, PacketFlag.SYN)) {
      this.#lastReceiveAt = now
      this.#onSynInSynchronizedState(segment)
      this.#flushAck()
      return
    }
    const isAck = hasFlag(segment, PacketFlag.ACK)
    // Acknowledges bytes never sent: a confused or stale peer (ISN 0 makes an old incarnation of the
    // 4-tuple look plausible). Dropped without an answer — two confused stacks would otherwise trade ACKs
    // forever — and without counting as life: idle timeout or the retransmission budget ends it.
    if (isAck && seqGt(segment.ack, this.#sndNxt)) return
    this.#lastReceiveAt = now
    const sack = isAck ? sackBlocksOf(segment, this.#sndNxt) : undefined
    const data = sack === undefined ? segment.payload : EMPTY_PAYLOAD
    const fin = hasFlag(segment, PacketFlag.FIN)
    const occupiesSequence = data.byteLength > 0 || fin
    // A pure ACK one below rcv.nxt is a probe (see the module doc): answer it, never count it as a dup ACK.
    const isProbe = !occupiesSequence && sack === undefined && seqAdd(segment.seq, 1) === this.#rx.next
    if (isAck) this.#onAck(segment, !occupiesSequence && !isProbe, sack, now)
    if (this.#state === "CLOSED") return
    if (occupiesSequence) this.#onData(segment.seq, data, fin, now)
    else if (isProbe) this.#ackNow = true
    this.#pump(now)
    this.#flushAck()
  }

  #onSynInSynchronizedState(segment: Segment): void {
    if (!hasFlag(segment, PacketFlag.ACK)) {
      // The dialer did not get our SYN-ACK: the same one again, with the sequence number it had.
      if (this.#role === "listener" && segment.seq === this.#irs) {
        this.#emit(PacketFlag.SYN | PacketFlag.ACK, this.#iss, EMPTY_PAYLOAD)
      }
      return
    }
    // A retransmitted SYN-ACK: our ACK of it was lost.
    if (this.#role === "dialer" && segment.seq === this.#irs) this.#ackNow = true
  }

  #onReset(): void {
    switch (this.#state) {
      case "TIME_WAIT":
        this.#enterClosed()
        return
      case "LAST_ACK":
      case "CLOSING":
        if (this.#finSeq !== undefined && !seqLt(this.#sndUna, this.#finSeq)) {
          this.#enterClosed()
          return
        }
        break
      default:
        break
    }
    this.#fail("reset_by_peer", `RST received in ${this.#state}`, false)
  }

  #onAck(segment: Segment, isDuplicateCandidate: boolean, sack: ReadonlyArray<SackBlock> | undefined, now: number): void {
    const ack = segment.ack
    let newlySacked = 0
    if (sack !== undefined) {
      this.#sackRecv += sack.length
      newlySacked = this.#queue.applySack(sack)
    }
    if (seqGt(ack, this.#sndUna)) {
      this.#onNewAck(ack, now)
    } else if (isDuplicateCandidate && ack === this.#sndUna && !this.#queue.isEmpty) {
      this.#dupAcks++
      if (this.#cc.onDuplicateAck(this.#queue.outstanding, this.#sndNxt)) this.#fastRetransmit(now)
    }
    if (newlySacked > 0 && this.#queue.markLostBySack() && this.#cc.phase === "open") {
      this.#cc.enterFastRecovery(this.#queue.outstanding, this.#sndNxt)
      this.#fastRetransmit(now)
    }
    if (seqLt(this.#sndWl1, segment.seq) || (this.#sndWl1 === segment.seq && seqLe(this.#sndWl2, ack))) {
      this.#sndWnd = segment.window
      this.#sndWl1 = segment.seq
      this.#sndWl2 = ack
    }
  }

  #onNewAck(ack: number, now: number): void {
    const { ackedLength, rttCandidate } = this.#queue.acknowledge(ack)
    this.#sndUna = ack
    if (rttCandidate !== undefined) {
      this.#rtt.onAcked(rttCandidate.firstSentAt, now, rttCandidate.transmissions, rttCandidate.everSacked)
    }
    if (this.#cc.onNewAck(ackedLength, ack) === "partial" && this.#cc.phase === "fast_recovery") {
      this.#queue.markHeadLost()
    }
    this.#rtoAt = this.#queue.isEmpty ? undefined : now + this.#rtt.rto
    if (this.#finSeq !== undefined && !this.#finAcked && seqGt(ack, this.#finSeq)) this.#onFinAcked(now)
  }

  #onFinAcked(now: number): void {
    this.#finAcked = true
    if (this.#state === "CLOSING") this.#enterTimeWait(now)
    else if (this.#state === "LAST_ACK") this.#enterClosed()
  }

  #onData(seq: number, data: Uint8Array, fin: boolean, now: number): void {
    if (data.byteLength > 0) this.#segsRecv++
    const finBefore = this.#rx.finReceived
    const deliveredBefore = this.#delivered.length
    const verdict = this.#rx.receive(seq, data, fin, this.#delivered)
    for (let i = deliveredBefore; i < this.#delivered.length; i++) {
      this.#bytesRecv += (this.#delivered[i] as Uint8Array).byteLength
    }
    if (verdict === "in_order") {
      this.#unackedInOrder++
      if (this.#unackedInOrder >= DELAYED_ACK_SEGMENTS) this.#ackNow = true
      else this.#delayedAckAt ??= now + DELAYED_ACK_MS
    } else {
      this.#ackNow = true
    }
    if (finBefore || !this.#rx.finReceived) return
    this.#ackNow = true
    this.#events.push({ type: "peer_closed" })
    if (this.#state === "ESTABLISHED") this.#setState("CLOSE_WAIT")
    else if (this.#state === "FIN_WAIT") {
      if (this.#finAcked) this.#enterTimeWait(now)
      else this.#setState("CLOSING")
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Sending

  /** Sends what the windows allow: lost segments first (RFC 6675 NextSeg), then new data, then the FIN. */
  #pump(now: number): void {
    if (!this.#isSynchronized() || this.#state === "TIME_WAIT") return
    const synAcked = seqGt(this.#sndUna, this.#iss)
    let holding = false
    while (true) {
      const lost = this.#queue.nextLost()
      if (lost !== undefined) {
        if (this.#queue.pipe + lost.length > this.#cc.cwnd) break
        this.#retransmit(lost, now, false)
        this.#fastRetx++
        continue
      }
      if (!synAcked || this.#queue.size >= MAX_OUTSTANDING_SEGMENTS) break
      if (this.#unsent.length > 0) {
        let length = Math.min(this.mss, this.#unsent.length)
        const alone = mustSendFirstByteAlone(this.#unsent.peek(SACK_LOOKAHEAD), length)
        if (alone) length = 1
        else if (length < this.mss && this.#nagleHolds()) {
          holding = true
          this.#nagleAt ??= now + NAGLE_DELAY_MS
          break
        }
        const room = seqDiff(this.#peerRightEdge(), this.#sndNxt)
        if (length > room) {
          // Window-limited: wait for ACKs, or send what fits when nothing is outstanding to bring them.
          if (room <= 0 || !this.#queue.isEmpty) break
          length = room
        }
        if (this.#queue.pipe + length > this.#cc.cwnd) break
        this.#sendData(length, now)
        continue
      }
      if (this.#finQueued && this.#finSeq === undefined) {
        if (this.#queue.pipe + 1 > this.#cc.cwnd) break
        this.#finSeq = this.#sndNxt
        this.#queue.push(this.#sndNxt, EMPTY_PAYLOAD, PacketFlag.FIN, 1, now)
        this.#sndNxt = seqAdd(this.#sndNxt, 1)
        this.#emit(PacketFlag.FIN | PacketFlag.ACK, this.#finSeq, EMPTY_PAYLOAD)
        continue
      }
      break
    }
    if (!holding) {
      this.#nagleAt = undefined
      this.#nagleExpired = false
    }
    if (!this.#queue.isEmpty) this.#rtoAt ??= now + this.#rtt.rto
    if (this.#writerBlocked && this.#unsent.length <= (SEND_BUFFER_SEGMENTS * this.mss) / 2) {
      this.#writerBlocked = false
      this.#events.push({ type: "writable" })
    }
    this.#scheduleProbe(now, synAcked)
  }

  #nagleHolds(): boolean {
    return !this.noDelay && !this.#finQueued && !this.#nagleExpired && !this.#queue.isEmpty
  }

  #peerRightEdge(): number {
    return seqAdd(this.#sndWl2, this.#sndWnd * WINDOW_UNIT_BYTES)
  }

  #sendData(length: number, now: number): void {
    const payload = this.#unsent.take(length)
    const seq = this.#sndNxt
    this.#queue.push(seq, payload, 0, length, now)
    this.#sndNxt = seqAdd(seq, length)
    this.#bytesSent += length
    this.#segsSent++
    this.#emit(PacketFlag.ACK, seq, payload)
  }

  #retransmit(segment: SentSegment, now: number, byTimer: boolean): void {
    this.#queue.noteRetransmit(segment, now, byTimer)
    this.#emit(segment.controlFlags | PacketFlag.ACK, segment.seq, segment.payload)
  }

  /** Fast retransmit: the first outstanding segment goes now, whatever the window (RFC 6675 step 4.3). */
  #fastRetransmit(now: number): void {
    this.#queue.markHeadLost()
    const head = this.#queue.head
    if (head === undefined || head.sacked) return
    this.#retransmit(head, now, false)
    this.#fastRetx++
  }

  #onRetransmissionTimeout(now: number): void {
    const head = this.#queue.head
    if (head === undefined) {
      this.#rtoAt = undefined
      return
    }
    if (head.timeoutRetransmits >= RETRANSMIT_BUDGET) {
      this.#fail("retransmit_budget_exhausted", `segment ${head.seq} timed out ${RETRANSMIT_BUDGET + 1} times`, true)
      return
    }
    // A lost SYN-ACK says nothing about the path's capacity: no data has been sent yet (RFC 5681 §3.1).
    if ((head.controlFlags & PacketFlag.SYN) === 0) this.#cc.onTimeout(this.#queue.outstanding, this.#sndNxt)
    this.#queue.markAllLost()
    this.#retransmit(head, now, true)
    this.#retransmits++
    this.#rtt.backoff()
    this.#rtoAt = now + this.#rtt.rto
  }

  #scheduleProbe(now: number, synAcked: boolean): void {
    const zeroWindow = synAcked && this.#queue.isEmpty && this.#unsent.length > 0 &&
      seqDiff(this.#peerRightEdge(), this.#sndNxt) <= 0
    if (zeroWindow) {
      if (!this.#persisting) {
        this.#persisting = true
        this.#probesSent = 0
        this.#probeInterval = PROBE_INITIAL_MS
        this.#probeAt = now + this.#probeInterval
      }
      return
    }
    this.#persisting = false
    const idle = this.#state === "ESTABLISHED" && this.#queue.isEmpty && this.#unsent.length === 0
    this.#probeAt = idle ? Math.max(this.#lastReceiveAt, this.#keepaliveSentAt) + KEEPALIVE_INTERVAL_MS : undefined
  }

  #onProbeTimer(now: number): void {
    if (this.#persisting) {
      if (this.#probesSent >= ZERO_WINDOW_PROBE_LIMIT) {
        this.#fail("zero_window_timeout", `peer window still zero after ${ZERO_WINDOW_PROBE_LIMIT} probes`, true)
        return
      }
      this.#probesSent++
      this.#probeInterval = Math.min(this.#probeInterval * 2, PROBE_MAX_MS)
      this.#probeAt = now + this.#probeInterval
    } else {
      this.#keepaliveSentAt = now
    }
    this.#emitProbe()
  }

  /** Sends an ACK now (with SACK while out-of-order data is held) if one is owed. */
  #flushAck(): void {
    if (!this.#ackNow || !this.#isSynchronized()) return
    const blocks = this.#rx.heldSegments > 0 ? this.#rx.sackBlocks() : []
    this.#sackSent += blocks.length
    this.#emit(PacketFlag.ACK, this.#sndNxt, blocks.length > 0 ? encodeSack(blocks) : EMPTY_PAYLOAD)
    this.#ackNow = false
  }

  #emitProbe(): void {
    this.#emit(PacketFlag.ACK, seqAdd(this.#sndNxt, -1), EMPTY_PAYLOAD)
  }

  #emitReset(): void {
    this.#emit(PacketFlag.RST, this.#sndNxt, EMPTY_PAYLOAD)
  }

  #emit(flags: number, seq: number, payload: Uint8Array): void {
    const acking = (flags & PacketFlag.ACK) !== 0
    const window = this.#rx.windowUnits
    this.#segments.push({ flags, seq, ack: acking ? this.#rx.next : 0, window, payload })
    this.#lastAdvertised = window
    if (!acking) return
    // Any ACK we send carries rcv.nxt: the delayed ACK is no longer owed. A SACK still is.
    this.#unackedInOrder = 0
    this.#delayedAckAt = undefined
    if (this.#rx.heldSegments === 0) this.#ackNow = false
  }

  #sendSyn(now: number): void {
    if (this.#synAttempts === 0) this.#synFirstSentAt = now
    this.#synAttempts++
    this.#synAt = now + this.#synRto
    this.#emit(PacketFlag.SYN, this.#iss, EMPTY_PAYLOAD)
  }

  // ---------------------------------------------------------------------------------------------------
  // States and steps

  #isSynchronized(): boolean {
    return this.#state !== "CLOSED" && this.#state !== "SYN_SENT"
  }

  #idleDeadline(): number | undefined {
    return this.#isSynchronized() && this.#state !== "TIME_WAIT" ? this.#lastReceiveAt + IDLE_TIMEOUT_MS : undefined
  }

  #setState(to: StreamState): void {
    if (to === this.#state) return
    this.#events.push({ type: "state_changed", from: this.#state, to })
    this.#state = to
  }

  #enterTimeWait(now: number): void {
    this.#setState("TIME_WAIT")
    this.#timeWaitAt = now + TIME_WAIT_MS
    this.#rtoAt = undefined
    this.#probeAt = undefined
    this.#nagleAt = undefined
  }

  #enterClosed(): void {
    this.#setState("CLOSED")
    this.#synAt = undefined
    this.#rtoAt = undefined
    this.#delayedAckAt = undefined
    this.#nagleAt = undefined
    this.#probeAt = undefined
    this.#timeWaitAt = undefined
    this.#ackNow = false
  }

  #fail(reason: StreamFailure, detail: string, sendReset: boolean): void {
    if (sendReset) this.#emitReset()
    this.#enterClosed()
    this.#events.push({ type: "failed", error: new StreamError({ reason, detail }) })
  }

  #newReassembly(next: number): Reassembly {
    return this.#receiveBufferBytes === undefined
      ? new Reassembly(next)
      : new Reassembly(next, { bufferBytes: this.#receiveBufferBytes })
  }

  #finishStep(now: number): StreamStep {
    // Idle keepalive is derived from state that may have changed in this step without a send.
    if (this.#isSynchronized() && !this.#persisting && this.#state !== "TIME_WAIT") {
      this.#scheduleProbe(now, seqGt(this.#sndUna, this.#iss))
    }
    const step: StreamStep = {
      state: this.#state,
      segments: this.#segments.length === 0 ? NO_SEGMENTS : this.#segments,
      delivered: this.#delivered.length === 0 ? NO_BYTES : this.#delivered,
      events: this.#events.length === 0 ? NO_EVENTS : this.#events,
      nextDeadline: this.nextDeadline
    }
    if (this.#segments.length > 0) this.#segments = []
    if (this.#delivered.length > 0) this.#delivered = []
    if (this.#events.length > 0) this.#events = []
    return step
  }
}

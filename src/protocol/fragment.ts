/**
 * Tunnel-level fragmentation (PILF, reference §8.7): cutting frames longer than 1223 bytes into PILF frames,
 * and reassembling them on the receiving side.
 *
 * The reassembler is a pure state machine: time is the `nowMs` of each call, there are no timers. The
 * rebuilt frame goes back through `decodeTunnelFrame` like any datagram, so every crypto check still applies;
 * reassembly only has to be bounded and not confusable.
 *
 * - **Key**: (source, claimed sender, fragment ID). `source` is a string the caller derives from where the
 *   datagram really came from (`ip:port`, or `relay:<beacon-reported sender>` for relayed ones), so a peer
 *   cannot inject fragments into another source's frame by claiming its sender ID.
 * - **Rejected fragments** (counted): a duplicate index, or a count (or index) that disagrees with the
 *   first fragment's count. The partial frame is kept; a stray bad fragment must not destroy good work.
 * - **Expiry**: a partial frame expires 3 s after its first fragment, judged by the `nowMs` of later calls
 *   (a late fragment for it starts a fresh partial) and by `sweep`, which the owner calls every second.
 * - **Overflow** (at most 32 partials per source, 256 in all): the *oldest* partial is evicted — the
 *   source's own oldest when that source is at its cap, else the oldest overall. Refusing newcomers instead
 *   would let anyone who sends 256 first fragments every 3 s (85 datagrams/s from 8 sources) block every
 *   large frame on the host; with eviction, blocking a frame means pushing 256 new partials through in the
 *   few milliseconds it takes that frame's fragments to arrive back-to-back. The oldest partial is also the
 *   likeliest to have lost a fragment for good. The per-source cap means one source only ever churns itself
 *   out until 8 sources collude.
 * - **Memory**: chunks are copied on arrival (the caller's datagram buffer may be reused or be a view into
 *   a large receive buffer), so the state is at most 256 × 64 × 1209 bytes ≈ 19.8 MB of chunk data.
 *   Completed frames are not remembered: a late duplicate of a finished frame opens a partial that expires.
 */
import { Result } from "effect"
import { type DecodeError, decodeFail } from "./errors.ts"
import {
  encodeFragmentFrame,
  type FragmentFrame,
  MAX_FRAGMENT_CHUNK_BYTES,
  MAX_FRAGMENTS,
  MAX_UNFRAGMENTED_FRAME_BYTES
} from "./tunnel-frame.ts"

/** Longest frame PILF can carry: 64 full chunks (77 376 bytes). */
export const MAX_FRAGMENTED_FRAME_BYTES = MAX_FRAGMENTS * MAX_FRAGMENT_CHUNK_BYTES
export const REASSEMBLY_TIMEOUT_MS = 3_000
export const MAX_PARTIAL_FRAMES = 256
export const MAX_PARTIAL_FRAMES_PER_SOURCE = 32

/**
 * The datagrams to send for `frame`: the frame itself when it is at most 1223 bytes, else PILF frames of
 * full 1209-byte chunks and a shorter last one, all under `fragId`. The caller picks `fragId` (the
 * reference starts from a random value per process and counts up). A frame past 64 chunks cannot be sent
 * this way and fails with `oversize` — it depends on traffic, not on a bug, hence a `Result`.
 */
export const fragmentFrame = (
  frame: Uint8Array,
  sender: number,
  fragId: number
): Result.Result<ReadonlyArray<Uint8Array>, DecodeError> => {
  if (frame.byteLength <= MAX_UNFRAGMENTED_FRAME_BYTES) return Result.succeed([frame])
  if (frame.byteLength > MAX_FRAGMENTED_FRAME_BYTES) {
    return decodeFail("PILF", "oversize", `frame of ${frame.byteLength} bytes exceeds ${MAX_FRAGMENTED_FRAME_BYTES}`)
  }
  const count = Math.ceil(frame.byteLength / MAX_FRAGMENT_CHUNK_BYTES)
  const fragments: Array<Uint8Array> = []
  for (let index = 0; index < count; index++) {
    const start = index * MAX_FRAGMENT_CHUNK_BYTES
    const chunk = frame.subarray(start, start + MAX_FRAGMENT_CHUNK_BYTES)
    fragments.push(encodeFragmentFrame({ sender, fragId, index, count, chunk }))
  }
  return Result.succeed(fragments)
}

// ---------------------------------------------------------------------------------------------------------
// Reassembly

export interface FragmentArrival {
  /** Where the datagram really came from (see the module doc); never taken from the frame itself. */
  readonly source: string
  /** A fragment as `decodeTunnelFrame` returned it, so count, index and chunk size are within §8.7 limits. */
  readonly fragment: FragmentFrame
}

export type RejectReason = "duplicate" | "inconsistent"

export type ReassemblyOutcome =
  | { readonly _tag: "Complete"; readonly frame: Uint8Array }
  | { readonly _tag: "Pending" }
  | { readonly _tag: "Rejected"; readonly reason: RejectReason }

/** Drop counters: rejected fragments, and partial frames given up on. */
export interface ReassemblyDrops {
  /** Fragments whose index had already arrived. */
  readonly duplicate: number
  /** Fragments whose count (or index) disagreed with their partial frame's count. */
  readonly inconsistent: number
  /** Partial frames dropped 3 s after their first fragment. */
  readonly expired: number
  /** Partial frames dropped to stay within the per-source or total cap. */
  readonly evicted: number
}

type DropReason = keyof ReassemblyDrops

interface PartialFrame {
  readonly key: string
  readonly source: string
  readonly count: number
  readonly firstMs: number
  readonly chunks: Array<Uint8Array | undefined>
  received: number
  bytes: number
}

// Outcomes without data are shared constants: the reassembler sits on the datagram hot path.
const PENDING: ReassemblyOutcome = { _tag: "Pending" }
const REJECTED_DUPLICATE: ReassemblyOutcome = { _tag: "Rejected", reason: "duplicate" }
const REJECTED_INCONSISTENT: ReassemblyOutcome = { _tag: "Rejected", reason: "inconsistent" }

/**
 * Numbers first: they contain no `/`, so the key is unambiguous whatever the source string holds.
 */
const keyOf = (source: string, f: FragmentFrame): string => `${f.sender}/${f.fragId}/${source}`

const concatChunks = (partial: PartialFrame): Uint8Array => {
  const frame = new Uint8Array(partial.bytes)
  let offset = 0
  for (const chunk of partial.chunks) {
    frame.set(chunk!, offset)
    offset += chunk!.byteLength
  }
  return frame
}

export class Reassembler {
  // Both maps iterate in insertion order, i.e. in order of each partial's first fragment: the first entry
  // is the oldest, which is what expiry and eviction look for.
  readonly #partials = new Map<string, PartialFrame>()
  readonly #bySource = new Map<string, Map<string, PartialFrame>>()
  readonly #drops: { -readonly [K in DropReason]: number } = { duplicate: 0, inconsistent: 0, expired: 0, evicted: 0 }

  /**
   * Takes one fragment. `Complete` carries the rebuilt frame in freshly allocated memory owned by the caller.
   */
  accept(arrival: FragmentArrival, nowMs: number): ReassemblyOutcome {
    this.#expireOldest(nowMs)
    const { fragment, source } = arrival
    // Only a fragment that did not come from the decoder can fail this; it still must not index past the array.
    if (fragment.index >= fragment.count) return this.#reject("inconsistent")
    const key = keyOf(source, fragment)
    let partial = this.#partials.get(key)
    if (partial !== undefined && this.#isExpired(partial, nowMs)) {
      this.#drop(partial, "expired")
      partial = undefined
    }
    if (partial === undefined) {
      if (fragment.count === 1) return { _tag: "Complete", frame: fragment.chunk.slice() }
      partial = this.#open(key, source, fragment.count, nowMs)
    } else if (fragment.count !== partial.count) {
      return this.#reject("inconsistent")
    }
    if (partial.chunks[fragment.index] !== undefined) return this.#reject("duplicate")
    partial.chunks[fragment.index] = fragment.chunk.slice()
    partial.received++
    partial.bytes += fragment.chunk.byteLength
    if (partial.received < partial.count) return PENDING
    this.#remove(partial)
    return { _tag: "Complete", frame: concatChunks(partial) }
  }

  /** Drops every partial frame that has expired by `nowMs`; returns how many. Call it every second. */
  sweep(nowMs: number): number {
    let dropped = 0
    for (const partial of this.#partials.values()) {
      if (this.#isExpired(partial, nowMs)) {
        this.#drop(partial, "expired")
        dropped++
      }
    }
    return dropped
  }

  /** Partial frames held right now (at most `MAX_PARTIAL_FRAMES`). */
  get partialFrames(): number {
    return this.#partials.size
  }

  /** A snapshot of the drop counters. */
  get drops(): ReassemblyDrops {
    return { ...this.#drops }
  }

  #isExpired(partial: PartialFrame, nowMs: number): boolean {
    return nowMs - partial.firstMs >= REASSEMBLY_TIMEOUT_MS
  }

  /**
   * Amortised O(1) expiry on the hot path: with a non-decreasing clock the expired partials are a prefix of
   * the map. If the clock steps back, nothing is dropped early; stragglers wait for `sweep`.
   */
  #expireOldest(nowMs: number): void {
    for (const partial of this.#partials.values()) {
      if (!this.#isExpired(partial, nowMs)) return
      this.#drop(partial, "expired")
    }
  }

  #reject(reason: RejectReason): ReassemblyOutcome {
    this.#drops[reason]++
    return reason === "duplicate" ? REJECTED_DUPLICATE : REJECTED_INCONSISTENT
  }

  #open(key: string, source: string, count: number, nowMs: number): PartialFrame {
    this.#makeRoom(source)
    let ofSource = this.#bySource.get(source)
    if (ofSource === undefined) {
      ofSource = new Map()
      this.#bySource.set(source, ofSource)
    }
    const partial: PartialFrame = { key, source, count, firstMs: nowMs, chunks: new Array(count), received: 0, bytes: 0 }
    this.#partials.set(key, partial)
    ofSource.set(key, partial)
    return partial
  }

  /** Evicts the source's oldest partial if the source is at its cap, else the oldest overall if all are full. */
  #makeRoom(source: string): void {
    const ofSource = this.#bySource.get(source)
    if (ofSource !== undefined && ofSource.size >= MAX_PARTIAL_FRAMES_PER_SOURCE) {
      this.#drop(ofSource.values().next().value!, "evicted")
    } else if (this.#partials.size >= MAX_PARTIAL_FRAMES) {
      this.#drop(this.#partials.values().next().value!, "evicted")
    }
  }

  #drop(partial: PartialFrame, reason: DropReason): void {
    this.#remove(partial)
    this.#drops[reason]++
  }

  #remove(partial: PartialFrame): void {
    this.#partials.delete(partial.key)
    const ofSource = this.#bySource.get(partial.source)
    if (ofSource === undefined) return
    ofSource.delete(partial.key)
    if (ofSource.size === 0) this.#bySource.delete(partial.source)
  }
}

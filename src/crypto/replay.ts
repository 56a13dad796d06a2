/**
 * Replay protection for received PILS frames (reference §4.3): a 256-counter sliding bitmap window per
 * **send epoch**, the epoch being the sender's 4-byte nonce prefix (a peer picks a new prefix every time
 * it derives the session, so a restarted counter under the same key is a new epoch, not 10 000 replays —
 * the wedge of reference §14.4).
 *
 * Order of operations, and why the API enforces it: AEAD open first, replay verdict second. A forged
 * frame must never move a window or bump a counter, otherwise an attacker without the key can push the
 * window forward and make every genuine frame "outside the window". `admit` therefore takes an
 * `AuthenticatedNonce`, a branded type that only `SessionKeys.open` (session.ts) hands out after the tag
 * has verified; `judge` is a side-effect-free query for anything that wants a verdict without committing.
 *
 * Epochs: the newest epoch's outcomes are `accepted` / `replay` / `outside_window` (the two rejections
 * feed the caller's drop gates). Up to `MAX_LIVE_EPOCHS` − 1 older epochs stay live for stragglers and are
 * judged only against their own window; any rejection there, and any frame of a retired epoch, is
 * `stale_epoch`. A new epoch beyond `MAX_LIVE_EPOCHS` retires the oldest one permanently — its prefix is
 * remembered, or its old frames could be replayed as a "new" epoch. Remembering costs memory, so one key
 * accepts at most `MAX_EPOCHS_PER_KEY` epochs; after that, new prefixes are `stale_epoch` and `exhausted`
 * turns true: the owner should drop the session and re-handshake (a new key starts a fresh guard).
 *
 * Pure state machine: no clock, no I/O. Time-based policy (grace periods, aged fast drop) stays with the
 * caller, who can compare `nonce.epoch` with `newestEpoch` and read `counts`.
 */
import type { Brand } from "effect"

/** Counters accepted behind the highest one seen in an epoch (`ReplayWindowSize` in the reference). */
export const REPLAY_WINDOW_SIZE = 256
/**
 * Epoch windows kept at once: the current one plus three older ones for stragglers. A peer re-derives
 * only on restart or re-handshake, so more than one straggling epoch is already rare; four bounds the
 * per-peer memory at ~4 × 40 bytes.
 */
export const MAX_LIVE_EPOCHS = 4
/** Distinct epochs one key may go through before the guard refuses new ones (see `exhausted`). */
export const MAX_EPOCHS_PER_KEY = 64

/** A received frame's nonce split into its epoch (4-byte prefix, BE) and counter (8 bytes, BE). */
export interface NonceFields {
  readonly epoch: number
  readonly counter: number
}

/** Nonce fields of a frame whose AEAD tag verified. Only `SessionKeys.open` should produce one. */
export type AuthenticatedNonce = NonceFields & Brand.Brand<"AuthenticatedNonce">

export type ReplayVerdict = "accepted" | "replay" | "outside_window" | "stale_epoch"

export interface ReplayCounts {
  readonly accepted: number
  readonly replay: number
  readonly outside_window: number
  readonly stale_epoch: number
  /** Epochs started (the first frame of each new nonce prefix). */
  readonly new_epoch: number
}

const WORDS = REPLAY_WINDOW_SIZE / 32

/**
 * One epoch's window: `highest` is the largest accepted counter; bit `c mod 256` of the ring says whether
 * counter `c` (for `highest − 255 ≤ c ≤ highest`) was seen.
 */
class EpochWindow {
  readonly epoch: number
  highest = 0
  readonly seen = new Uint32Array(WORDS)

  constructor(epoch: number) {
    this.epoch = epoch
  }

  judge(counter: number): "accepted" | "replay" | "outside_window" {
    if (counter > this.highest) return "accepted"
    if (this.highest - counter >= REPLAY_WINDOW_SIZE) return "outside_window"
    const slot = counter % REPLAY_WINDOW_SIZE
    return (this.seen[slot >>> 5]! & (1 << (slot & 31))) !== 0 ? "replay" : "accepted"
  }

  /** Records `counter`; the caller has judged it `accepted`. */
  commit(counter: number): void {
    if (counter > this.highest) {
      if (counter - this.highest >= REPLAY_WINDOW_SIZE) {
        this.seen.fill(0)
      } else {
        for (let c = this.highest + 1; c < counter; c++) {
          const slot = c % REPLAY_WINDOW_SIZE
          this.seen[slot >>> 5]! &= ~(1 << (slot & 31))
        }
      }
      this.highest = counter
    }
    const slot = counter % REPLAY_WINDOW_SIZE
    this.seen[slot >>> 5]! |= 1 << (slot & 31)
  }
}

/**
 * Honest senders start at 1 and count up; 0 and counters past 2^53 (not exactly representable, so they
 * could alias) are never sent and are treated as outside any window.
 */
const isValidCounter = (counter: number): boolean => Number.isSafeInteger(counter) && counter >= 1

/** Replay state for one receive session (one key). Not shared between sessions. */
export class ReplayGuard {
  /** Oldest first; the last entry is the newest epoch. */
  readonly #live: Array<EpochWindow> = []
  readonly #retired = new Set<number>()
  readonly #counts = { accepted: 0, replay: 0, outside_window: 0, stale_epoch: 0, new_epoch: 0 }

  /** Cumulative outcome counters (a live view, not a copy). */
  get counts(): ReplayCounts {
    return this.#counts
  }

  /** The epoch of the most recently started send epoch, or `undefined` before the first accepted frame. */
  get newestEpoch(): number | undefined {
    return this.#live.at(-1)?.epoch
  }

  /** True once `MAX_EPOCHS_PER_KEY` epochs were used: new prefixes are refused; drop and re-handshake. */
  get exhausted(): boolean {
    return this.#live.length + this.#retired.size >= MAX_EPOCHS_PER_KEY
  }

  /** The verdict `admit` would give, without changing any state (counters included). */
  judge(epoch: number, counter: number): ReplayVerdict {
    const index = this.#findLive(epoch)
    if (index < 0) {
      if (this.#retired.has(epoch) || this.exhausted) return "stale_epoch"
      return isValidCounter(counter) ? "accepted" : "outside_window"
    }
    const verdict = isValidCounter(counter) ? this.#live[index]!.judge(counter) : "outside_window"
    const isNewest = index === this.#live.length - 1
    return isNewest || verdict === "accepted" ? verdict : "stale_epoch"
  }

  /** Judges an authenticated frame and, if accepted, records it. Call exactly once per opened frame. */
  admit(nonce: AuthenticatedNonce): ReplayVerdict {
    const { counter, epoch } = nonce
    const verdict = this.judge(epoch, counter)
    this.#counts[verdict]++
    if (verdict !== "accepted") return verdict
    let index = this.#findLive(epoch)
    if (index < 0) index = this.#startEpoch(epoch)
    this.#live[index]!.commit(counter)
    return verdict
  }

  #findLive(epoch: number): number {
    // Newest first: nearly every frame belongs to the newest epoch.
    for (let i = this.#live.length - 1; i >= 0; i--) {
      if (this.#live[i]!.epoch === epoch) return i
    }
    return -1
  }

  #startEpoch(epoch: number): number {
    this.#counts.new_epoch++
    if (this.#live.length === MAX_LIVE_EPOCHS) this.#retired.add(this.#live.shift()!.epoch)
    return this.#live.push(new EpochWindow(epoch)) - 1
  }
}

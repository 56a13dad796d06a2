import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import * as fc from "fast-check"
import {
  type AuthenticatedNonce,
  MAX_EPOCHS_PER_KEY,
  MAX_LIVE_EPOCHS,
  REPLAY_WINDOW_SIZE,
  ReplayGuard,
  type ReplayVerdict
} from "../../src/crypto/replay.ts"
import { deriveSessionKeys, generateTunnelKeyPair, type SealedFrame } from "../../src/crypto/session.ts"

/**
 * Stands in for `SessionKeys.open` so the window logic can be driven with chosen counters; the
 * "end to end" properties below go through the real AEAD instead.
 */
const authenticated = (epoch: number, counter: number) => ({ epoch, counter }) as AuthenticatedNonce

const EPOCH = 0xa1b2c3d4

/** The obvious (unbounded-memory) specification of one epoch's window. */
class WindowModel {
  readonly seen = new Set<number>()
  highest = 0
  verdict(counter: number): ReplayVerdict {
    if (counter > this.highest) return "accepted"
    if (this.highest - counter >= REPLAY_WINDOW_SIZE) return "outside_window"
    return this.seen.has(counter) ? "replay" : "accepted"
  }
  commit(counter: number): void {
    this.seen.add(counter)
    this.highest = Math.max(this.highest, counter)
  }
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** 1..n, each at least once, plus duplicates, in a random order. */
const permutationWithDuplicates = fc.integer({ min: 1, max: REPLAY_WINDOW_SIZE }).chain((n) =>
  fc.array(fc.integer({ min: 1, max: n }), { maxLength: n }).chain((duplicates) => {
    const all = [...range(1, n), ...duplicates]
    return fc.shuffledSubarray(all, { minLength: all.length, maxLength: all.length }).map((order) => ({ n, order }))
  })
)

describe("one epoch's sliding window", () => {
  it("accepts every counter of a shuffled sequence exactly once and rejects the repeats as replays", () => {
    fc.assert(
      fc.property(permutationWithDuplicates, ({ n, order }) => {
        const guard = new ReplayGuard()
        const accepted = new Set<number>()
        for (const counter of order) {
          const verdict = guard.admit(authenticated(EPOCH, counter))
          expect(verdict).toBe(accepted.has(counter) ? "replay" : "accepted")
          accepted.add(counter)
        }
        expect(guard.counts).toEqual({
          accepted: n,
          replay: order.length - n,
          outside_window: 0,
          stale_epoch: 0,
          new_epoch: 1
        })
      }),
      { numRuns: 300 }
    )
  })

  it("agrees with the specification on arbitrary sequences, far jumps included", () => {
    // Counters are drawn relative to the highest seen so far, so most land in or near the window (where
    // the ring-slot reuse is subtle) rather than uniformly far behind it; the window edges are favoured.
    const edge = fc.constantFrom(-257, -256, -255, -1, 0, 1, 255, 256, 257)
    const step = fc.oneof(fc.integer({ min: -300, max: 300 }), fc.integer({ min: -20, max: 20 }), edge)
    const offsets = fc.array(step, { maxLength: 400 })
    fc.assert(
      fc.property(offsets, (steps) => {
        const guard = new ReplayGuard()
        const model = new WindowModel()
        for (const offset of steps) {
          const counter = Math.max(1, model.highest + offset)
          const expected = model.verdict(counter)
          expect(guard.admit(authenticated(EPOCH, counter))).toBe(expected)
          if (expected === "accepted") model.commit(counter)
        }
      }),
      { numRuns: 1000 }
    )
  })

  it("rejects a counter 256 or more behind the highest as outside_window, 255 behind is still judged", () => {
    const guard = new ReplayGuard()
    expect(guard.admit(authenticated(EPOCH, 1))).toBe("accepted")
    expect(guard.admit(authenticated(EPOCH, 300))).toBe("accepted")
    expect(guard.admit(authenticated(EPOCH, 300 - REPLAY_WINDOW_SIZE))).toBe("outside_window")
    expect(guard.admit(authenticated(EPOCH, 1))).toBe("outside_window")
    expect(guard.admit(authenticated(EPOCH, 300 - REPLAY_WINDOW_SIZE + 1))).toBe("accepted")
    expect(guard.admit(authenticated(EPOCH, 300 - REPLAY_WINDOW_SIZE + 1))).toBe("replay")
    expect(guard.counts.outside_window).toBe(2)
  })

  it("clears the ring slots it skips over, so a reused slot does not read as seen", () => {
    const guard = new ReplayGuard()
    for (const c of [5, 250, 300]) expect(guard.admit(authenticated(EPOCH, c))).toBe("accepted")
    // 261 shares counter 5's ring slot; it was skipped by the 250 → 300 step and never received.
    expect(guard.admit(authenticated(EPOCH, 5 + REPLAY_WINDOW_SIZE))).toBe("accepted")
  })

  it("forgets nothing it should remember across a jump larger than the window", () => {
    const guard = new ReplayGuard()
    for (const c of range(1, 10)) guard.admit(authenticated(EPOCH, c))
    expect(guard.admit(authenticated(EPOCH, 10_000))).toBe("accepted")
    // The ring slots of 1..10 were reused; the counters that now map to them must read as unseen.
    expect(guard.admit(authenticated(EPOCH, 10_000 - 255))).toBe("accepted")
    expect(guard.admit(authenticated(EPOCH, 10_000 - 256))).toBe("outside_window")
    expect(guard.admit(authenticated(EPOCH, 10_000))).toBe("replay")
  })

  it("treats counter 0 and counters beyond 2^53 as outside any window", () => {
    const guard = new ReplayGuard()
    expect(guard.judge(EPOCH, 0)).toBe("outside_window") // unknown epoch
    expect(guard.admit(authenticated(EPOCH, 5))).toBe("accepted")
    expect(guard.admit(authenticated(EPOCH, 0))).toBe("outside_window")
    expect(guard.admit(authenticated(EPOCH, 2 ** 53))).toBe("outside_window")
    expect(guard.admit(authenticated(EPOCH, 6))).toBe("accepted")
  })
})

describe("send epochs", () => {
  const [A, B, C, D, E] = [0x10, 0x20, 0x30, 0x40, 0x50]

  it("starts a new epoch for an unknown prefix and keeps the previous one for stragglers", () => {
    const guard = new ReplayGuard()
    for (const c of range(1, 10)) expect(guard.admit(authenticated(A, c))).toBe("accepted")
    expect(guard.admit(authenticated(B, 1))).toBe("accepted") // peer re-derived: counter restarts at 1
    expect(guard.newestEpoch).toBe(B)
    expect(guard.admit(authenticated(A, 11))).toBe("accepted") // straggler in its own window
    expect(guard.admit(authenticated(A, 5))).toBe("stale_epoch") // replay in an older epoch
    expect(guard.admit(authenticated(B, 1))).toBe("replay") // replay in the newest epoch
    expect(guard.admit(authenticated(B, 2))).toBe("accepted")
    expect(guard.newestEpoch).toBe(B)
    expect(guard.counts).toEqual({ accepted: 13, replay: 1, outside_window: 0, stale_epoch: 1, new_epoch: 2 })
  })

  it("judges an older epoch only against its own window: far behind there is stale_epoch, not outside_window", () => {
    const guard = new ReplayGuard()
    guard.admit(authenticated(A, 1000))
    guard.admit(authenticated(B, 1))
    expect(guard.admit(authenticated(A, 1))).toBe("stale_epoch")
    expect(guard.admit(authenticated(A, 999))).toBe("accepted")
    expect(guard.counts.outside_window).toBe(0)
  })

  it(`retires the oldest of ${MAX_LIVE_EPOCHS + 1} epochs permanently`, () => {
    const guard = new ReplayGuard()
    for (const epoch of [A, B, C, D]) expect(guard.admit(authenticated(epoch, 1))).toBe("accepted")
    expect(guard.admit(authenticated(A, 2))).toBe("accepted") // still live
    expect(guard.admit(authenticated(E, 1))).toBe("accepted") // fifth epoch: A retires
    expect(guard.admit(authenticated(A, 3))).toBe("stale_epoch")
    expect(guard.admit(authenticated(A, 1))).toBe("stale_epoch") // never restarts as a "new" epoch
    expect(guard.admit(authenticated(B, 2))).toBe("accepted")
    expect(guard.newestEpoch).toBe(E)
    expect(guard.counts.new_epoch).toBe(5)
  })

  it(`refuses new epochs after ${MAX_EPOCHS_PER_KEY} and says the session is exhausted`, () => {
    const guard = new ReplayGuard()
    for (const epoch of range(1, MAX_EPOCHS_PER_KEY)) {
      expect(guard.exhausted).toBe(false)
      expect(guard.admit(authenticated(epoch, 1))).toBe("accepted")
    }
    expect(guard.exhausted).toBe(true)
    expect(guard.admit(authenticated(MAX_EPOCHS_PER_KEY + 1, 1))).toBe("stale_epoch")
    expect(guard.admit(authenticated(MAX_EPOCHS_PER_KEY, 2))).toBe("accepted") // live epochs keep working
    expect(guard.newestEpoch).toBe(MAX_EPOCHS_PER_KEY)
  })
})

describe("no state change without a commit", () => {
  const op = fc.record({
    epoch: fc.integer({ min: 1, max: 6 }),
    counter: fc.integer({ min: 0, max: 700 }),
    commit: fc.boolean()
  })

  it("judge never changes a verdict or a counter", () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const probed = new ReplayGuard()
        const plain = new ReplayGuard()
        for (const { commit, counter, epoch } of ops) {
          const judged = probed.judge(epoch, counter)
          if (commit) {
            const verdict = probed.admit(authenticated(epoch, counter))
            expect(verdict).toBe(judged)
            expect(plain.admit(authenticated(epoch, counter))).toBe(verdict)
          }
        }
        expect(probed.counts).toEqual(plain.counts)
        expect(probed.newestEpoch).toBe(plain.newestEpoch)
      }),
      { numRuns: 300 }
    )
  })
})

describe("end to end: AEAD open, then the replay window", () => {
  const session = () => {
    const alice = generateTunnelKeyPair()
    const bob = generateTunnelKeyPair()
    return {
      /** Two derivations on the sender's side: same key, two send epochs. */
      senders: [
        Result.getOrThrow(deriveSessionKeys(alice.privateKey, bob.publicKey)),
        Result.getOrThrow(deriveSessionKeys(alice.privateKey, bob.publicKey))
      ] as const,
      receiver: Result.getOrThrow(deriveSessionKeys(bob.privateKey, alice.publicKey))
    }
  }
  const SENDER = 7

  /** What the tunnel does per PILS frame: open first; only an authenticated nonce reaches the guard. */
  const receive = (keys: ReturnType<typeof session>["receiver"], guard: ReplayGuard, frame: SealedFrame, sender = SENDER) => {
    const opened = keys.open(frame.nonce, frame.sealed, sender)
    return Result.isSuccess(opened) ? guard.admit(opened.success.nonce) : opened.failure
  }

  const forge = (frame: SealedFrame, how: "bit" | "counter"): SealedFrame => {
    const nonce = Uint8Array.from(frame.nonce)
    const sealed = Uint8Array.from(frame.sealed)
    if (how === "bit") sealed[0]! ^= 1
    else new DataView(nonce.buffer).setBigUint64(4, 1_000_000n) // claims a far-ahead counter
    return { nonce, sealed }
  }

  it("duplicated, reordered genuine frames over two epochs are accepted once each; forged frames change nothing", () => {
    const delivery = fc.record({
      frames: fc.integer({ min: 1, max: 40 }),
      epochSwitchAt: fc.integer({ min: 0, max: 40 }),
      picks: fc.array(fc.record({ index: fc.nat(), forged: fc.constantFrom(undefined, "bit" as const, "counter" as const) }), {
        maxLength: 120
      })
    })
    fc.assert(
      fc.property(delivery, ({ epochSwitchAt, frames, picks }) => {
        const { receiver, senders } = session()
        const sent = range(0, frames - 1).map((i) => senders[i < epochSwitchAt ? 0 : 1].seal(Uint8Array.of(i), SENDER))
        const withForgeries = new ReplayGuard()
        const genuineOnly = new ReplayGuard()
        const seen = new Set<number>()
        for (const { forged, index } of picks) {
          const i = index % frames
          if (forged !== undefined) {
            expect(receive(receiver, withForgeries, forge(sent[i]!, forged))).toBe("auth_failed")
            continue
          }
          const verdict = receive(receiver, withForgeries, sent[i]!)
          expect(receive(receiver, genuineOnly, sent[i]!)).toBe(verdict)
          // Fewer than 256 frames per epoch: every genuine frame is accepted exactly once; a repeat is a
          // replay, or stale_epoch when it belongs to the older epoch.
          if (!seen.has(i)) expect(verdict).toBe("accepted")
          else expect(["replay", "stale_epoch"]).toContain(verdict)
          seen.add(i)
        }
        expect(withForgeries.counts).toEqual(genuineOnly.counts)
        expect(withForgeries.counts.accepted).toBe(seen.size)
      }),
      { numRuns: 150 }
    )
  })

  it("a forged frame claiming a far-ahead counter cannot push genuine frames out of the window", () => {
    const { receiver, senders } = session()
    const guard = new ReplayGuard()
    const first = senders[0].seal(Uint8Array.of(1), SENDER)
    const second = senders[0].seal(Uint8Array.of(2), SENDER)
    expect(receive(receiver, guard, first)).toBe("accepted")
    expect(receive(receiver, guard, forge(second, "counter"))).toBe("auth_failed")
    expect(receive(receiver, guard, second)).toBe("accepted")
    expect(receive(receiver, guard, second, SENDER + 1)).toBe("auth_failed") // another node's ID as AAD
    expect(guard.counts).toEqual({ accepted: 2, replay: 0, outside_window: 0, stale_epoch: 0, new_epoch: 1 })
  })
})

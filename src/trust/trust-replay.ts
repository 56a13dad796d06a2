/**
 * The replay set for authenticated trust messages (reference §5). A trust signature covers only
 * `handshake:<sender>:<receiver>`, so it is not message-specific; within the 5-minute timestamp window the same
 * (type, challenge, signature) must be accepted once. Record a message only after it authenticated, so that
 * forgeries cannot fill the set.
 *
 * Bounded: 8192 entries in all (the oldest entry goes first) and 256 per peer (the peer's own oldest goes, so
 * one noisy peer cannot evict everyone else's). Entries older than 10 minutes — twice the timestamp window —
 * are reaped by `reap`, which the shell calls every 5 minutes. Time is an input (unix milliseconds).
 */
import { createHash } from "node:crypto"

export const REPLAY_MAX_ENTRIES = 8192
export const REPLAY_MAX_PER_PEER = 256
export const REPLAY_ENTRY_TTL_MS = 10 * 60 * 1000

export interface ReplaySet {
  /** Digest → (peer, first seen), in insertion order. */
  readonly entries: Map<string, { readonly peer: number; readonly seenAt: number }>
  /** Each peer's digests, oldest first. */
  readonly byPeer: Map<number, Array<string>>
}

export const makeReplaySet = (): ReplaySet => ({ entries: new Map(), byPeer: new Map() })

export const replayDigest = (type: string, challenge: string, signature: string): string =>
  createHash("sha256").update(`${type}\n${challenge}\n${signature}`).digest("base64")

const forget = (set: ReplaySet, digest: string): void => {
  const entry = set.entries.get(digest)
  if (entry === undefined) return
  set.entries.delete(digest)
  const list = set.byPeer.get(entry.peer)
  if (list === undefined) return
  const index = list.indexOf(digest)
  if (index >= 0) list.splice(index, 1)
  if (list.length === 0) set.byPeer.delete(entry.peer)
}

/** "replay" if `digest` was already recorded; otherwise records it for `peer` and answers "fresh". */
export const checkAndRecord = (set: ReplaySet, digest: string, peer: number, now: number): "fresh" | "replay" => {
  if (set.entries.has(digest)) return "replay"
  const own = set.byPeer.get(peer)
  if (own !== undefined && own.length >= REPLAY_MAX_PER_PEER) forget(set, own[0]!)
  if (set.entries.size >= REPLAY_MAX_ENTRIES) {
    const oldest = set.entries.keys().next()
    if (oldest.done !== true) forget(set, oldest.value)
  }
  set.entries.set(digest, { peer, seenAt: now })
  const list = set.byPeer.get(peer)
  if (list === undefined) set.byPeer.set(peer, [digest])
  else list.push(digest)
  return "fresh"
}

/** Drops entries older than 10 minutes; returns how many went. */
export const reap = (set: ReplaySet, now: number): number => {
  let removed = 0
  for (const [digest, entry] of set.entries) {
    if (now - entry.seenAt < REPLAY_ENTRY_TTL_MS) continue
    forget(set, digest)
    removed++
  }
  return removed
}

import { assert, describe, it } from "@effect/vitest"
import {
  checkAndRecord,
  makeReplaySet,
  reap,
  REPLAY_ENTRY_TTL_MS,
  REPLAY_MAX_ENTRIES,
  REPLAY_MAX_PER_PEER,
  replayDigest
} from "../../src/trust/trust-replay.ts"

describe("trust replay set", () => {
  it("a message is fresh once, then a replay; type, challenge and signature all matter", () => {
    const set = makeReplaySet()
    const digest = replayDigest("handshake_accept", "handshake:1:2", "sig")
    assert.strictEqual(checkAndRecord(set, digest, 1, 0), "fresh")
    assert.strictEqual(checkAndRecord(set, digest, 1, 1), "replay")
    assert.strictEqual(checkAndRecord(set, replayDigest("handshake_revoke", "handshake:1:2", "sig"), 1, 1), "fresh")
    assert.strictEqual(checkAndRecord(set, replayDigest("handshake_accept", "handshake:1:3", "sig"), 1, 1), "fresh")
    assert.strictEqual(checkAndRecord(set, replayDigest("handshake_accept", "handshake:1:2", "sig2"), 1, 1), "fresh")
  })

  it(`a peer keeps at most ${REPLAY_MAX_PER_PEER} entries, losing its own oldest; others are untouched`, () => {
    const set = makeReplaySet()
    const other = replayDigest("t", "other", "0")
    checkAndRecord(set, other, 2, 0)
    for (let i = 0; i <= REPLAY_MAX_PER_PEER; i++) checkAndRecord(set, replayDigest("t", "c", String(i)), 1, i)
    assert.strictEqual(set.byPeer.get(1)?.length, REPLAY_MAX_PER_PEER)
    assert.strictEqual(checkAndRecord(set, replayDigest("t", "c", "0"), 1, 999), "fresh") // evicted, so fresh again
    assert.strictEqual(checkAndRecord(set, replayDigest("t", "c", "2"), 1, 999), "replay")
    assert.strictEqual(checkAndRecord(set, other, 2, 999), "replay")
  })

  it(`at most ${REPLAY_MAX_ENTRIES} entries in all, the oldest going first`, () => {
    const set = makeReplaySet()
    for (let i = 0; i < REPLAY_MAX_ENTRIES + 10; i++) checkAndRecord(set, replayDigest("t", "c", String(i)), i, i)
    assert.strictEqual(set.entries.size, REPLAY_MAX_ENTRIES)
    assert.strictEqual(set.byPeer.size, REPLAY_MAX_ENTRIES)
    assert.isFalse(set.entries.has(replayDigest("t", "c", "9")))
    assert.isTrue(set.entries.has(replayDigest("t", "c", "10")))
  })

  it("entries are reaped after 10 minutes", () => {
    const set = makeReplaySet()
    checkAndRecord(set, "a", 1, 0)
    checkAndRecord(set, "b", 1, 1000)
    assert.strictEqual(reap(set, REPLAY_ENTRY_TTL_MS - 1), 0)
    assert.strictEqual(reap(set, REPLAY_ENTRY_TTL_MS), 1)
    assert.deepStrictEqual(set.byPeer.get(1), ["b"])
    assert.strictEqual(reap(set, REPLAY_ENTRY_TTL_MS + 1000), 1)
    assert.strictEqual(set.byPeer.size, 0)
  })
})

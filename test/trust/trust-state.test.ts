import { assert, describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import {
  approve,
  emptyTrustState,
  type IncomingRequest,
  MAX_JUSTIFICATION_BYTES,
  MAX_PENDING,
  MAX_PENDING_PER_SOURCE,
  OUTGOING_TTL_MS,
  PENDING_TTL_MS,
  pruneExpired,
  receiveAccept,
  receiveReject,
  receiveRequest,
  receiveRevoke,
  recordOutgoing,
  reject,
  revoke,
  REVOKE_COOLDOWN_MS,
  sanitizeJustification,
  type Transition,
  type TrustPolicy,
  type TrustState
} from "../../src/trust/trust-state.ts"
import { keyOf } from "./fixtures.ts"


const PEER = 7
const T0 = 1_700_000_000_000
const noPolicy: TrustPolicy = { trustedAgents: new Set(), autoApprove: false }
const request = (overrides: Partial<IncomingRequest> = {}): IncomingRequest => ({
  node_id: PEER,
  public_key: keyOf(PEER),
  registryBound: true,
  ...overrides
})
const ok = (result: Result.Result<Transition, string>): Transition => {
  assert.isTrue(Result.isSuccess(result), `expected success, got ${String(Result.isFailure(result) && result.failure)}`)
  return (result as Result.Success<Transition, string>).success
}
const trustedState = (peer = PEER): TrustState =>
  ok(approve(receiveRequest(emptyTrustState, request({ node_id: peer, public_key: keyOf(peer) }), noPolicy, T0).state, peer, T0)).state

describe("incoming request decision order", () => {
  const outgoing = recordOutgoing(emptyTrustState, PEER, T0).state
  const agents: TrustPolicy = { trustedAgents: new Set([PEER]), autoApprove: false }
  const auto: TrustPolicy = { trustedAgents: new Set(), autoApprove: true }
  const cases: ReadonlyArray<{
    name: string
    state: TrustState
    request: IncomingRequest
    policy: TrustPolicy
    expect: "accept_only" | "pending" | "mutual" | "network" | "trusted_agent" | "auto_approve"
  }> = [
    { name: "already trusted → accept, nothing changes", state: trustedState(), request: request(), policy: auto, expect: "accept_only" },
    { name: "our outgoing + registryBound → mutual", state: outgoing, request: request({ sharedNetwork: 5 }), policy: auto, expect: "mutual" },
    { name: "our outgoing but not registryBound → falls through to auto flag", state: outgoing, request: request({ registryBound: false }), policy: auto, expect: "auto_approve" },
    { name: "our outgoing expired → pending", state: outgoing, request: request(), policy: noPolicy, expect: "pending" },
    { name: "shared non-backbone network + registryBound → network", state: emptyTrustState, request: request({ sharedNetwork: 5 }), policy: agents, expect: "network" },
    { name: "shared backbone only → pending", state: emptyTrustState, request: request({ sharedNetwork: 0 }), policy: noPolicy, expect: "pending" },
    { name: "shared network, not registryBound → pending", state: emptyTrustState, request: request({ sharedNetwork: 5, registryBound: false }), policy: noPolicy, expect: "pending" },
    { name: "trusted agent + registryBound → trusted_agent", state: emptyTrustState, request: request(), policy: agents, expect: "trusted_agent" },
    { name: "trusted agent, not registryBound → pending", state: emptyTrustState, request: request({ registryBound: false }), policy: agents, expect: "pending" },
    { name: "auto-approve flag → auto_approve", state: emptyTrustState, request: request({ registryBound: false }), policy: auto, expect: "auto_approve" },
    { name: "nothing applies → pending", state: emptyTrustState, request: request(), policy: noPolicy, expect: "pending" }
  ]
  for (const c of cases) {
    it(c.name, () => {
      const now = c.name.includes("expired") ? T0 + OUTGOING_TTL_MS : T0 + 1
      const t = receiveRequest(c.state, c.request, c.policy, now)
      if (c.expect === "accept_only") {
        expect(t.effects).toEqual([{ _tag: "SendAccept", peer: PEER }])
        assert.isFalse(t.changed)
      } else if (c.expect === "pending") {
        assert.isTrue(t.changed)
        assert.isFalse(t.state.trusted.has(PEER))
        expect(t.state.pending.get(PEER)).toEqual({ node_id: PEER, public_key: keyOf(PEER), received_at: now })
        expect(t.effects).toEqual([{ _tag: "Publish", event: { name: "handshake.received", peer: PEER } }])
      } else {
        assert.isTrue(t.changed)
        expect(t.state.trusted.get(PEER)).toEqual({
          node_id: PEER,
          public_key: keyOf(PEER),
          approved_at: now,
          mutual: c.expect === "mutual",
          ...(c.expect === "network" ? { network: 5 } : {})
        })
        assert.isFalse(t.state.pending.has(PEER))
        assert.isFalse(t.state.outgoing.has(PEER))
        expect(t.effects).toEqual([
          { _tag: "Publish", event: { name: "handshake.auto_approved", peer: PEER, reason: c.expect } },
          { _tag: "Publish", event: { name: "trust.changed", peer: PEER, state: "granted", reason: c.expect } },
          { _tag: "SendAccept", peer: PEER },
          { _tag: "ReportTrust", peer: PEER }
        ])
      }
    })
  }
})

describe("pending requests", () => {
  const fill = (count: number, make: (i: number) => IncomingRequest): TrustState => {
    let state = emptyTrustState
    for (let i = 0; i < count; i++) state = receiveRequest(state, make(i), noPolicy, T0).state
    return state
  }

  it(`at most ${MAX_PENDING} in all: the next new request is dropped, a repeat still refreshes`, () => {
    const full = fill(MAX_PENDING, (i) => request({ node_id: 1000 + i }))
    assert.strictEqual(full.pending.size, MAX_PENDING)
    const dropped = receiveRequest(full, request({ node_id: 1 }), noPolicy, T0)
    assert.isFalse(dropped.changed)
    assert.isFalse(dropped.state.pending.has(1))
    expect(dropped.effects).toEqual([{ _tag: "Publish", event: { name: "handshake.pending_dropped", peer: 1, cap: "total" } }])
    const refreshed = receiveRequest(full, request({ node_id: 1000, justification: "again" }), noPolicy, T0 + 5)
    expect(refreshed.state.pending.get(1000)).toMatchObject({ justification: "again", received_at: T0 + 5 })
  })

  it(`at most ${MAX_PENDING_PER_SOURCE} delivered by one source node`, () => {
    const full = fill(MAX_PENDING_PER_SOURCE, (i) => request({ node_id: 1000 + i, source: 99 }))
    const dropped = receiveRequest(full, request({ node_id: 1, source: 99 }), noPolicy, T0)
    expect(dropped.effects).toEqual([{ _tag: "Publish", event: { name: "handshake.pending_dropped", peer: 1, cap: "per_source" } }])
    assert.isTrue(receiveRequest(full, request({ node_id: 1, source: 98 }), noPolicy, T0).state.pending.has(1))
    assert.isTrue(receiveRequest(full, request({ node_id: 1 }), noPolicy, T0).state.pending.has(1))
  })

  it("an expired request frees its slot and is pruned after 30 days", () => {
    const full = fill(MAX_PENDING, (i) => request({ node_id: 1000 + i }))
    assert.strictEqual(pruneExpired(full, T0 + PENDING_TTL_MS - 1).pending.size, MAX_PENDING)
    assert.strictEqual(pruneExpired(full, T0 + PENDING_TTL_MS).pending.size, 0)
    const after = receiveRequest(full, request({ node_id: 1 }), noPolicy, T0 + PENDING_TTL_MS)
    expect([...after.state.pending.keys()]).toEqual([1])
  })

  it("justification keeps printable characters only, at most 1024 bytes, never splitting a character", () => {
    assert.strictEqual(sanitizeJustification("hi\u0000\u001b[31m there\n\u200b!"), "hi[31m there!")
    assert.strictEqual(sanitizeJustification("héllo 世界 🐟"), "héllo 世界 🐟")
    const long = sanitizeJustification("é".repeat(600))
    assert.strictEqual(Buffer.byteLength(long), MAX_JUSTIFICATION_BYTES)
    const odd = sanitizeJustification("a" + "é".repeat(600))
    assert.strictEqual(Buffer.byteLength(odd), MAX_JUSTIFICATION_BYTES - 1)
    const stored = receiveRequest(emptyTrustState, request({ justification: "\u0007" }), noPolicy, T0).state.pending.get(PEER)
    assert.notProperty(stored, "justification")
  })

  it("local approve trusts the peer (with a backfilled key if the request had none); reject drops it", () => {
    const { public_key: _key, ...keyless } = request()
    const pending = receiveRequest(emptyTrustState, keyless, noPolicy, T0).state
    expect(approve(pending, PEER, T0)).toEqual(Result.fail("no_public_key"))
    const approved = ok(approve(pending, PEER, T0 + 1, keyOf(1)))
    expect(approved.state.trusted.get(PEER)).toEqual({ node_id: PEER, public_key: keyOf(1), approved_at: T0 + 1, mutual: false })
    expect(approved.effects.map((e) => e._tag)).toEqual(["Publish", "SendAccept", "ReportTrust"])
    const rejected = ok(reject(pending, PEER, T0))
    assert.strictEqual(rejected.state.pending.size, 0)
    expect(rejected.effects[0]).toEqual({ _tag: "SendReject", peer: PEER })
    expect(approve(emptyTrustState, PEER, T0)).toEqual(Result.fail("no_pending_request"))
    expect(reject(emptyTrustState, PEER, T0)).toEqual(Result.fail("no_pending_request"))
  })
})

describe("outgoing requests, accepts, rejects and revokes", () => {
  it("an outgoing request lives 10 minutes", () => {
    const state = recordOutgoing(emptyTrustState, PEER, T0).state
    assert.isTrue(receiveRequest(state, request(), noPolicy, T0 + OUTGOING_TTL_MS - 1).state.trusted.has(PEER))
    assert.isFalse(receiveRequest(state, request(), noPolicy, T0 + OUTGOING_TTL_MS).state.trusted.has(PEER))
    assert.strictEqual(pruneExpired(state, T0 + OUTGOING_TTL_MS).outgoing.size, 0)
  })

  it("a peer's accept trusts it mutually and reports it, without sending our accept", () => {
    const t = receiveAccept(recordOutgoing(emptyTrustState, PEER, T0).state, PEER, keyOf(PEER), T0 + 1)
    expect(t.state.trusted.get(PEER)).toEqual({ node_id: PEER, public_key: keyOf(PEER), approved_at: T0 + 1, mutual: true })
    assert.strictEqual(t.state.outgoing.size, 0)
    expect(t.effects).toEqual([
      { _tag: "Publish", event: { name: "trust.changed", peer: PEER, state: "granted", reason: "accepted" } },
      { _tag: "ReportTrust", peer: PEER }
    ])
    const again = receiveAccept(t.state, PEER, keyOf(PEER), T0 + 2)
    assert.isFalse(again.changed)
    expect(again.effects).toEqual([])
  })

  it("local revoke: peer notified before its tunnel goes, registry told, 5-minute cooldown ignores accepts", () => {
    const t = ok(revoke(trustedState(), PEER, T0))
    assert.isFalse(t.state.trusted.has(PEER))
    expect(t.effects.map((e) => e._tag)).toEqual(["SendRevoke", "TearDownTunnel", "RevokeTrust", "Publish"])
    expect(t.state.cooldowns.get(PEER)).toBe(T0 + REVOKE_COOLDOWN_MS)
    const during = receiveAccept(t.state, PEER, keyOf(PEER), T0 + REVOKE_COOLDOWN_MS - 1)
    assert.isFalse(during.changed)
    assert.isFalse(during.state.trusted.has(PEER))
    const after = receiveAccept(t.state, PEER, keyOf(PEER), T0 + REVOKE_COOLDOWN_MS)
    assert.isTrue(after.state.trusted.has(PEER))
    assert.strictEqual(after.state.cooldowns.size, 0)
    expect(revoke(emptyTrustState, PEER, T0)).toEqual(Result.fail("not_trusted"))
  })

  it("an explicit handshake clears the cooldown", () => {
    const revoked = ok(revoke(trustedState(), PEER, T0)).state
    const t = recordOutgoing(revoked, PEER, T0 + 1)
    assert.isTrue(t.changed)
    assert.isTrue(receiveAccept(t.state, PEER, keyOf(PEER), T0 + 2).state.trusted.has(PEER))
  })

  it("a peer's reject clears our outgoing request", () => {
    const t = receiveReject(recordOutgoing(emptyTrustState, PEER, T0).state, PEER, T0 + 1)
    assert.strictEqual(t.state.outgoing.size, 0)
    expect(t.effects).toEqual([{ _tag: "Publish", event: { name: "handshake.rejected", peer: PEER, by: "peer" } }])
    expect(receiveReject(emptyTrustState, PEER, T0).effects).toEqual([])
  })

  it("a peer's revoke forgets it entirely and tears its tunnel down, without a cooldown", () => {
    const t = receiveRevoke(trustedState(), PEER, T0)
    assert.isTrue(t.changed)
    assert.isFalse(t.state.trusted.has(PEER))
    assert.strictEqual(t.state.cooldowns.size, 0)
    expect(t.effects.map((e) => e._tag)).toEqual(["TearDownTunnel", "RevokeTrust", "Publish"])
    const pending = receiveRequest(emptyTrustState, request(), noPolicy, T0).state
    assert.strictEqual(receiveRevoke(pending, PEER, T0).state.pending.size, 0)
  })
})

/**
 * The trust handshake service between real daemons' data planes on loopback, with an in-process registry:
 * direct and relayed handshakes, approvals, rejections, revokes, and refused forgeries and replays. Every test
 * ends with the lifecycle check (no fiber or handle left).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, type Duration, Effect, FileSystem, type Path, Queue, type Scope } from "effect"
import type * as NetAddress from "effect/net/NetAddress"
import { decodeBase64 } from "../../src/crypto/base64.ts"
import { Identity } from "../../src/crypto/identity.ts"
import { makeDataPlane } from "../../src/daemon/data-plane.ts"
import { localFileSystem } from "../../src/platform/file-system.ts"
import { WellKnownPort } from "../../src/protocol/packet.ts"
import { resolveChallenge } from "../../src/protocol/registry.ts"
import { encodeTrustMessage, type TrustMessage, trustHandshakeChallenge } from "../../src/protocol/trust-message.ts"
import { type RegistryClient } from "../../src/registry/client.ts"
import type { Transport } from "../../src/transport/transport.ts"
import { makeHandshakeService } from "../../src/trust/handshake-service.ts"
import { armFastPolling, DEFAULT_POLL_TIMING, makePollSchedule, nextPollAt, recordPoll } from "../../src/trust/relay-poll-schedule.ts"
import type { TrustEvent } from "../../src/trust/trust-state.ts"
import { makeTrustStore } from "../../src/trust/trust-store.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { registerRequest, startRegistry } from "../support/registry.ts"

type Endpoints = Map<number, NetAddress.InetAddress>

/** The registry's key for a node, as the daemon looks it up. */
const registryKeyVia = (client: RegistryClient) => (node: number) =>
  client.call({ type: "lookup", node_id: node }).pipe(
    Effect.map((reply) => decodeBase64(String(reply["public_key"]))),
    Effect.catchTag("RegistryRejected", () => Effect.succeed(undefined))
  )

const register = (client: RegistryClient, identity: Identity) =>
  Effect.map(client.call(registerRequest(identity, "127.0.0.1:9")), (reply) => Number(reply["node_id"]))

/** A registry plus a way to start daemons (data plane + trust store + handshake service) against it. */
const startWorld = Effect.gen(function*() {
  const registry = yield* startRegistry()
  const client = yield* registry.client()
  const fs = yield* FileSystem.FileSystem
  /** Where each node's tunnel listens; a node's directory may leave a peer out (a private peer). */
  const endpoints: Endpoints = new Map()

  const startNode = (options: { readonly unreachable?: ReadonlyArray<number>; readonly sendTimeout?: Duration.Input } = {}) =>
    Effect.gen(function*() {
      const identity = Identity.generate()
      const nodeId = yield* register(client, identity)
      const nodeClient = yield* registry.client()
      const registryKey = registryKeyVia(nodeClient)
      const plane = yield* makeDataPlane({
        identity,
        nodeId,
        bind: { host: "127.0.0.1", port: 0 },
        registryKey,
        endpointOf: (node) => Effect.succeed(options.unreachable?.includes(node) ? undefined : endpoints.get(node))
      })
      endpoints.set(nodeId, plane.tunnel.address)
      yield* Effect.forkScoped(plane.failure)
      const directory = yield* fs.makeTempDirectoryScoped({ prefix: "pilotfish-handshake-" })
      const store = yield* makeTrustStore({ directory, policy: { trustedAgents: new Set(), autoApprove: false } })
      const events = yield* Queue.unbounded<TrustEvent>()
      const service = yield* makeHandshakeService({
        identity,
        nodeId,
        transport: plane.transport,
        store,
        registry: nodeClient,
        registryKey,
        onEvent: (event) => Queue.offer(events, event),
        timing: options.sendTimeout === undefined
          ? { poll: { fastIntervalMs: 200 } }
          : { sendTimeout: options.sendTimeout, poll: { fastIntervalMs: 200 } }
      })
      /** The next event named `name` for `peer` (earlier other events are skipped). */
      const nextEvent = (name: TrustEvent["name"], peer: number) =>
        Effect.gen(function*() {
          while (true) {
            const event = yield* Queue.take(events)
            if (event.name === name && event.peer === peer) return event
          }
        }).pipe(Effect.timeout("15 seconds"))
      return { identity, nodeId, plane, store, service, nextEvent }
    })

  /** Whether the registry lets `from` resolve `to` (private nodes: only with a trust pair). */
  const mayResolve = (from: { identity: Identity; nodeId: number }, to: number) =>
    client.call({
      type: "resolve",
      node_id: to,
      requester_id: from.nodeId,
      signature: from.identity.signChallenge(resolveChallenge(from.nodeId, to))
    }).pipe(
      Effect.as(true),
      Effect.catchTag("RegistryRejected", (error) => {
        assert.strictEqual(error.code, "not_authorized")
        return Effect.succeed(false)
      })
    )

  return { client, startNode, mayResolve }
})

/** A hand-made trust message from `sender` to `receiver` (what a forger or replayer would send). */
const messageFrom = (sender: { identity: Identity; nodeId: number }, receiver: number, type: TrustMessage["type"], now: number): TrustMessage => ({
  type,
  node_id: sender.nodeId,
  public_key: sender.identity.publicKeyBase64,
  justification: "",
  signature: sender.identity.signChallenge(trustHandshakeChallenge(sender.nodeId, receiver)),
  reason: "",
  timestamp: Math.floor(now / 1000)
})

/** Sends `message` on a fresh stream to `to`'s port 444 and waits until the receiver closes it (it processed it). */
const sendRaw = (transport: Transport, to: number, message: TrustMessage) =>
  Effect.gen(function*() {
    const bytes = encodeTrustMessage(message)
    assert.isTrue(bytes._tag === "Success")
    if (bytes._tag !== "Success") return
    const connection = yield* transport.dial({ network: 0, node: to }, WellKnownPort.TrustHandshake)
    yield* connection.write(bytes.success)
    yield* connection.close
    while ((yield* connection.read) !== undefined) { /* the receiver sends nothing; wait for its close */ }
  }).pipe(Effect.timeout("15 seconds"))

const live = <A, E>(effect: Effect.Effect<A, E, FileSystem.FileSystem | Path.Path | Scope.Scope>) =>
  expectNoLeaks(effect.pipe(Effect.provide(localFileSystem)))

describe("trust handshake service (port 444)", () => {
  it.live("mutual: both sides ask, both auto-approve, and the registry learns the pair", () =>
    live(Effect.gen(function*() {
      const world = yield* startWorld
      const a = yield* world.startNode()
      const b = yield* world.startNode()
      assert.isFalse(yield* world.mayResolve(a, b.nodeId))
      const routes = yield* Effect.all([a.service.handshake(b.nodeId, "hi b"), b.service.handshake(a.nodeId, "hi a")], {
        concurrency: 2
      })
      assert.deepStrictEqual(routes, ["direct", "direct"])
      assert.isTrue(yield* a.service.waitForTrust(b.nodeId, "15 seconds"))
      assert.isTrue(yield* b.service.waitForTrust(a.nodeId, "15 seconds"))
      // At least one side saw the other's request cross its own: the mutual auto-approval.
      const autoA = (yield* a.store.state).trusted.get(b.nodeId)
      const autoB = (yield* b.store.state).trusted.get(a.nodeId)
      assert.isTrue(autoA?.mutual === true && autoB?.mutual === true)
      assert.deepStrictEqual([(yield* a.store.state).pending.size, (yield* b.store.state).pending.size], [0, 0])
      assert.isTrue(yield* world.mayResolve(a, b.nodeId))
      assert.isTrue(yield* world.mayResolve(b, a.nodeId))
    })), 60_000)

  it.live("one-sided: the request waits in the peer's pending list until approved; then both trust", () =>
    live(Effect.gen(function*() {
      const world = yield* startWorld
      const a = yield* world.startNode()
      const b = yield* world.startNode()
      assert.strictEqual(yield* a.service.handshake(b.nodeId, "let me in"), "direct")
      yield* b.nextEvent("handshake.received", a.nodeId)
      const pending = (yield* b.store.state).pending.get(a.nodeId)
      assert.strictEqual(pending?.justification, "let me in")
      assert.strictEqual(pending?.public_key, a.identity.publicKeyBase64)
      assert.isFalse((yield* b.store.state).trusted.has(a.nodeId))

      yield* b.service.approve(a.nodeId)
      assert.isTrue((yield* b.store.state).trusted.has(a.nodeId))
      assert.isTrue(yield* a.service.waitForTrust(b.nodeId, "15 seconds"))
      assert.strictEqual((yield* a.store.state).trusted.get(b.nodeId)?.mutual, true)
      assert.isTrue(yield* world.mayResolve(a, b.nodeId))
    })), 60_000)

  it.live("one-sided, rejected: the requester's outgoing request is cleared and nobody trusts", () =>
    live(Effect.gen(function*() {
      const world = yield* startWorld
      const a = yield* world.startNode()
      const b = yield* world.startNode()
      yield* a.service.handshake(b.nodeId, "please")
      assert.isTrue((yield* a.store.state).outgoing.has(b.nodeId))
      yield* b.nextEvent("handshake.received", a.nodeId)
      yield* b.service.reject(a.nodeId)
      const event = yield* a.nextEvent("handshake.rejected", b.nodeId)
      assert.deepStrictEqual(event, { name: "handshake.rejected", peer: b.nodeId, by: "peer" })
      assert.isFalse((yield* a.store.state).outgoing.has(b.nodeId))
      assert.strictEqual((yield* b.store.state).pending.size, 0)
      assert.isFalse((yield* a.store.state).trusted.has(b.nodeId))
      const refused = yield* b.service.approve(a.nodeId).pipe(Effect.flip)
      assert.strictEqual(refused.code, "no_pending_request")
    })), 60_000)

  it.live("revoke: the peer forgets the trust and the registry pair is revoked", () =>
    live(Effect.gen(function*() {
      const world = yield* startWorld
      const a = yield* world.startNode()
      const b = yield* world.startNode()
      yield* Effect.all([a.service.handshake(b.nodeId, ""), b.service.handshake(a.nodeId, "")], { concurrency: 2 })
      assert.isTrue(yield* a.service.waitForTrust(b.nodeId, "15 seconds"))
      assert.isTrue(yield* b.service.waitForTrust(a.nodeId, "15 seconds"))
      assert.isTrue(yield* world.mayResolve(a, b.nodeId))

      yield* a.service.revoke(b.nodeId)
      const event = yield* b.nextEvent("trust.changed", a.nodeId).pipe(
        Effect.repeat({ until: (e) => e.name === "trust.changed" && e.state === "revoked" })
      )
      assert.deepStrictEqual(event, { name: "trust.changed", peer: a.nodeId, state: "revoked", reason: "peer_revoked" })
      assert.isFalse((yield* b.store.state).trusted.has(a.nodeId))
      assert.isFalse((yield* a.store.state).trusted.has(b.nodeId))
      assert.isFalse(yield* world.mayResolve(a, b.nodeId))
      const again = yield* a.service.revoke(b.nodeId).pipe(Effect.flip)
      assert.strictEqual(again.code, "not_trusted")
    })), 60_000)

  it.live("forged and replayed messages are refused and change nothing", () =>
    live(Effect.gen(function*() {
      const world = yield* startWorld
      const a = yield* world.startNode()
      const b = yield* world.startNode()
      const c = { identity: Identity.generate(), nodeId: 0 }
      c.nodeId = yield* register(world.client, c.identity) // registered, but without a data plane
      const now = yield* Clock.currentTimeMillis
      const before = yield* b.store.state

      // A request in A's name signed by another key.
      const impostor = Identity.generate()
      const forged = { ...messageFrom(a, b.nodeId, "handshake_request", now), signature: impostor.signChallenge(trustHandshakeChallenge(a.nodeId, b.nodeId)) }
      yield* sendRaw(a.plane.transport, b.nodeId, forged)
      // A genuine accept from C, but arriving on A's authenticated stream.
      yield* sendRaw(a.plane.transport, b.nodeId, messageFrom(c, b.nodeId, "handshake_accept", now))
      // A request claiming A's ID with C's (registry-known) key.
      yield* sendRaw(a.plane.transport, b.nodeId, { ...messageFrom(c, b.nodeId, "handshake_request", now), node_id: a.nodeId })
      // Dated 10 minutes ago.
      yield* sendRaw(a.plane.transport, b.nodeId, messageFrom(a, b.nodeId, "handshake_request", now - 10 * 60 * 1000))
      assert.deepStrictEqual(yield* b.store.state, before)
      assert.deepStrictEqual(b.service.stats().rejected, { bad_signature: 1, source_mismatch: 1, key_mismatch: 1, stale: 1 })
      assert.strictEqual(b.service.stats().authenticated, 0)

      // The same genuine request twice: the first lands in pending, the copy is a replay.
      const genuine = messageFrom(a, b.nodeId, "handshake_request", now)
      yield* sendRaw(a.plane.transport, b.nodeId, genuine)
      assert.isTrue((yield* b.store.state).pending.has(a.nodeId))
      yield* b.service.reject(a.nodeId) // the reject goes out to A; B's pending is empty again
      yield* sendRaw(a.plane.transport, b.nodeId, genuine)
      assert.isFalse((yield* b.store.state).pending.has(a.nodeId))
      assert.strictEqual(b.service.stats().rejected.replay, 1)
      assert.strictEqual(b.service.stats().authenticated, 1)
    })), 60_000)

  it.live("relayed: a peer A cannot reach gets the request through the registry, and answers the same way", () =>
    live(Effect.gen(function*() {
      const world = yield* startWorld
      const b = yield* world.startNode()
      const a = yield* world.startNode({ unreachable: [b.nodeId], sendTimeout: "1 second" })
      assert.strictEqual(yield* a.service.handshake(b.nodeId, "via the registry"), "relayed")
      assert.strictEqual(a.service.stats().sentRelayed, 1)

      yield* b.service.pollNow // an on-demand poll (as an operator listing pending requests triggers)
      const pending = (yield* b.store.state).pending.get(a.nodeId)
      assert.strictEqual(pending?.justification, "via the registry")
      assert.strictEqual(pending?.public_key, a.identity.publicKeyBase64) // backfilled from the registry
      assert.strictEqual(b.service.stats().relayedRequests, 1)

      // B's approval goes back through the registry; A's fast polling (armed by its request) picks it up.
      yield* b.service.approve(a.nodeId)
      assert.strictEqual(b.service.stats().sentRelayed, 1)
      assert.strictEqual(b.service.stats().sentDirect, 0)
      assert.isTrue(yield* a.service.waitForTrust(b.nodeId, "15 seconds"))
      assert.strictEqual(a.service.stats().relayedResponses, 1)
      assert.isTrue(yield* world.mayResolve(a, b.nodeId))
    })), 60_000)
})

describe("relayed-handshake poll schedule", () => {
  it("polls at once, then at the baseline; fast for 2 minutes after a request; on demand after the 2 s gap", () => {
    const schedule = makePollSchedule()
    const t = DEFAULT_POLL_TIMING
    assert.strictEqual(nextPollAt(schedule, 1000, t), 1000)
    recordPoll(schedule, 1000)
    assert.strictEqual(nextPollAt(schedule, 1500, t), 61_000)
    schedule.onDemand = true
    assert.strictEqual(nextPollAt(schedule, 1500, t), 3000)
    recordPoll(schedule, 3000)
    armFastPolling(schedule, 7, 3000, t)
    assert.strictEqual(nextPollAt(schedule, 3500, t), 5000)
    assert.strictEqual(nextPollAt(schedule, 3000 + 120_000, t), 63_000) // the window is over: baseline again
    for (let peer = 0; peer < 100; peer++) armFastPolling(schedule, peer, 4000, t)
    assert.strictEqual(schedule.fastUntil.size, 64)
  })
})

/**
 * The registry store contract, as one suite that every store implementation runs (embedded and Redis), so
 * the two cannot drift apart. Time is explicit (`nowMs` arguments), so expiry is tested without waiting.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Layer } from "effect"
import { INBOX_CAPACITY, LEASE_MS, RegistryStore, type RegisterInput } from "../../src/registry/store.ts"

const T0 = 1_700_000_000_000
const key = (n: number) => Buffer.alloc(32, n).toString("base64")
const reg = (n: number, extra: Partial<RegisterInput> = {}): RegisterInput => ({
  publicKey: key(n),
  realAddr: `192.0.2.${n}:4000`,
  relayOnly: false,
  nowMs: T0,
  ...extra
})

const registered = (input: RegisterInput) =>
  RegistryStore.use((s) => s.register(input)).pipe(
    Effect.map((outcome) => {
      assert.strictEqual(outcome._tag, "Registered")
      return outcome as Extract<typeof outcome, { _tag: "Registered" }>
    })
  )

/** Runs the contract against a fresh, empty store built by `makeStore` for each test. */
export const storeContract = (name: string, makeStore: () => Layer.Layer<RegistryStore, unknown>) =>
  describe(`registry store contract: ${name}`, () => {
    const test = (title: string, body: Effect.Effect<void, unknown, RegistryStore>) =>
      it.live(title, () => body.pipe(Effect.provide(makeStore(), { local: true })))

    test("a new key gets a new node ID; the same key reclaims it", Effect.gen(function*() {
      const a = yield* registered(reg(1))
      const b = yield* registered(reg(2))
      assert.notStrictEqual(a.lease.nodeId, b.lease.nodeId)
      assert.isFalse(a.reclaimed)
      const again = yield* registered(reg(1, { realAddr: "198.51.100.1:5000", nowMs: T0 + 1000 }))
      assert.strictEqual(again.lease.nodeId, a.lease.nodeId)
      assert.isTrue(again.reclaimed)
      assert.strictEqual(again.lease.realAddr, "198.51.100.1:5000")
    }))

    test("a hostname is claimed at registration unless another live node holds it", Effect.gen(function*() {
      const a = yield* registered(reg(1, { hostname: "alpha" }))
      assert.strictEqual(a.lease.hostname, "alpha")
      const b = yield* registered(reg(2, { hostname: "alpha" }))
      assert.isTrue(b.hostnameTaken)
      assert.isUndefined(b.lease.hostname)
      const store = yield* RegistryStore
      assert.strictEqual(yield* store.resolveHostname("alpha", T0), a.lease.nodeId)
    }))

    test("a lease expires after LEASE_MS of silence; the ID stays bound to the key", Effect.gen(function*() {
      const store = yield* RegistryStore
      const a = yield* registered(reg(1, { hostname: "alpha" }))
      assert.isDefined(yield* store.lease(a.lease.nodeId, T0 + LEASE_MS - 1))
      assert.isUndefined(yield* store.lease(a.lease.nodeId, T0 + LEASE_MS))
      assert.isUndefined(yield* store.resolveHostname("alpha", T0 + LEASE_MS))
      assert.strictEqual(yield* store.boundKey(a.lease.nodeId), key(1))
      assert.strictEqual(yield* store.nodeIdOfKey(key(1)), a.lease.nodeId)
      assert.isUndefined(yield* store.nodeIdOfKey(key(99)))
      assert.strictEqual(yield* store.nodesOnline(T0 + LEASE_MS), 0)
      // The freed hostname goes to another node; the old key comes back to its old ID.
      const b = yield* registered(reg(2, { hostname: "alpha", nowMs: T0 + LEASE_MS }))
      assert.strictEqual(b.lease.hostname, "alpha")
      const back = yield* registered(reg(1, { nowMs: T0 + LEASE_MS + 1 }))
      assert.strictEqual(back.lease.nodeId, a.lease.nodeId)
    }))

    test("heartbeats renew a live lease and say when there is none", Effect.gen(function*() {
      const store = yield* RegistryStore
      const a = yield* registered(reg(1))
      assert.isTrue(yield* store.heartbeat(a.lease.nodeId, T0 + 120_000))
      assert.isDefined(yield* store.lease(a.lease.nodeId, T0 + 240_000))
      assert.isFalse(yield* store.heartbeat(a.lease.nodeId, T0 + 120_000 + LEASE_MS))
      assert.isFalse(yield* store.heartbeat(999_999, T0))
    }))

    test("set_hostname: set, change, clear, conflicts and missing nodes", Effect.gen(function*() {
      const store = yield* RegistryStore
      const a = (yield* registered(reg(1))).lease.nodeId
      const b = (yield* registered(reg(2))).lease.nodeId
      assert.strictEqual(yield* store.setHostname(a, "alpha", T0), "ok")
      assert.strictEqual(yield* store.setHostname(b, "alpha", T0), "taken")
      assert.strictEqual(yield* store.setHostname(a, "alpha", T0), "ok")
      assert.strictEqual(yield* store.setHostname(a, "beta", T0), "ok")
      assert.isUndefined(yield* store.resolveHostname("alpha", T0))
      assert.strictEqual(yield* store.resolveHostname("beta", T0), a)
      assert.strictEqual(yield* store.setHostname(a, "", T0), "ok")
      assert.isUndefined(yield* store.resolveHostname("beta", T0))
      assert.isUndefined((yield* store.lease(a, T0))?.hostname)
      assert.strictEqual(yield* store.setHostname(b, "alpha", T0), "ok")
      assert.strictEqual(yield* store.setHostname(424242, "gamma", T0), "not_found")
    }))

    test("visibility and tags are stored on the lease and kept across re-registration", Effect.gen(function*() {
      const store = yield* RegistryStore
      const a = (yield* registered(reg(1, { hostname: "alpha" }))).lease.nodeId
      assert.strictEqual(yield* store.setVisibility(a, true, T0), "ok")
      assert.strictEqual(yield* store.setTags(a, ["gpu", "eu-west"], T0), "ok")
      const again = yield* registered(reg(1, { nowMs: T0 + 1000 }))
      assert.isTrue(again.lease.public)
      assert.deepStrictEqual([...again.lease.tags], ["gpu", "eu-west"])
      assert.strictEqual(again.lease.hostname, "alpha")
      assert.strictEqual(yield* store.setVisibility(31337, true, T0), "not_found")
      assert.strictEqual(yield* store.setTags(31337, [], T0), "not_found")
    }))

    test("deregister ends the lease and frees the hostname, but keeps the key binding", Effect.gen(function*() {
      const store = yield* RegistryStore
      const a = (yield* registered(reg(1, { hostname: "alpha" }))).lease.nodeId
      assert.strictEqual(yield* store.deregister(a), "ok")
      assert.isUndefined(yield* store.lease(a, T0))
      assert.isUndefined(yield* store.resolveHostname("alpha", T0))
      assert.strictEqual(yield* store.deregister(a), "not_found")
      assert.strictEqual((yield* registered(reg(1))).lease.nodeId, a)
    }))

    test("rotate_key rebinds the node ID to the new key", Effect.gen(function*() {
      const store = yield* RegistryStore
      const a = (yield* registered(reg(1))).lease.nodeId
      const b = (yield* registered(reg(2))).lease.nodeId
      assert.strictEqual(yield* store.rotateKey(a, key(2)), "key_in_use")
      assert.strictEqual(yield* store.rotateKey(a, key(3)), "ok")
      assert.strictEqual(yield* store.boundKey(a), key(3))
      assert.strictEqual((yield* store.lease(a, T0))?.publicKey, key(3))
      assert.strictEqual((yield* registered(reg(3))).lease.nodeId, a)
      const fresh = yield* registered(reg(1))
      assert.notStrictEqual(fresh.lease.nodeId, a)
      assert.notStrictEqual(fresh.lease.nodeId, b)
      assert.strictEqual(yield* store.rotateKey(777_777, key(9)), "not_found")
    }))

    test("a trust pair needs both sides' reports, ends on either side's revoke, and outlives leases", Effect.gen(function*() {
      const store = yield* RegistryStore
      const a = (yield* registered(reg(1))).lease.nodeId
      const b = (yield* registered(reg(2))).lease.nodeId
      assert.isFalse(yield* store.hasTrust(a, b))
      assert.strictEqual(yield* store.reportTrust(b, a), "ok")
      assert.isFalse(yield* store.hasTrust(a, b)) // one side alone cannot make itself trusted
      assert.strictEqual(yield* store.reportTrust(a, b), "ok")
      assert.strictEqual(yield* store.reportTrust(a, b), "ok") // idempotent
      assert.isTrue(yield* store.hasTrust(a, b))
      assert.isTrue(yield* store.hasTrust(b, a))
      yield* store.deregister(a)
      assert.isTrue(yield* store.hasTrust(a, b))
      yield* store.revokeTrust(b, a)
      assert.isFalse(yield* store.hasTrust(a, b))
      assert.strictEqual(yield* store.reportTrust(a, b), "ok")
      assert.isFalse(yield* store.hasTrust(a, b)) // the revoke removed b's report too
    }))

    test("the handshake inbox holds at most INBOX_CAPACITY items and drains once", Effect.gen(function*() {
      const store = yield* RegistryStore
      const a = (yield* registered(reg(1))).lease.nodeId
      for (let i = 0; i < INBOX_CAPACITY - 1; i++) {
        assert.strictEqual(yield* store.pushInbox(a, { kind: "request", fromNodeId: 1000 + i, justification: `j${i}`, signature: "c2ln" }), "ok")
      }
      assert.strictEqual(yield* store.pushInbox(a, { kind: "response", fromNodeId: 7, accept: true }), "ok")
      assert.strictEqual(yield* store.pushInbox(a, { kind: "response", fromNodeId: 8, accept: false }), "full")
      yield* store.deregister(a) // inboxes belong to the node ID, not the lease
      const inbox = yield* store.drainInbox(a)
      assert.strictEqual(inbox.requests.length, INBOX_CAPACITY - 1)
      assert.deepStrictEqual(inbox.requests[0], { kind: "request", fromNodeId: 1000, justification: "j0", signature: "c2ln" })
      assert.deepStrictEqual([...inbox.responses], [{ kind: "response", fromNodeId: 7, accept: true }])
      const empty = yield* store.drainInbox(a)
      assert.deepStrictEqual([empty.requests.length, empty.responses.length], [0, 0])
    }))

    test("beacons are listed until they go quiet for a minute", Effect.gen(function*() {
      const store = yield* RegistryStore
      assert.strictEqual(yield* store.registerBeacon({ beaconId: 1, addr: "203.0.113.1:9001" }, T0), "ok")
      assert.strictEqual(yield* store.registerBeacon({ beaconId: 2, addr: "203.0.113.2:9001" }, T0 + 30_000), "ok")
      assert.strictEqual(yield* store.registerBeacon({ beaconId: 1, addr: "203.0.113.9:9001" }, T0 + 30_000), "ok")
      const listed = yield* store.listBeacons(T0 + 31_000)
      assert.deepStrictEqual([...listed].sort((x, y) => x.beaconId - y.beaconId), [
        { beaconId: 1, addr: "203.0.113.9:9001" },
        { beaconId: 2, addr: "203.0.113.2:9001" }
      ])
      assert.deepStrictEqual([...(yield* store.listBeacons(T0 + 90_000))], [])
    }))

    test("nodes online counts live leases only", Effect.gen(function*() {
      const store = yield* RegistryStore
      yield* registered(reg(1))
      yield* registered(reg(2, { nowMs: T0 + 60_000 }))
      assert.strictEqual(yield* store.nodesOnline(T0 + 60_000), 2)
      assert.strictEqual(yield* store.nodesOnline(T0 + LEASE_MS), 1)
    }))
  })

import * as NodeRedis from "@effect/platform-node/NodeRedis"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { Redis } from "effect/persistence"
import fc from "fast-check"
import { defaultMemoryLimits, type MemoryLimits, MemoryState } from "../../src/registry/memory-state.ts"
import { GC_TTL_MS, keys } from "../../src/registry/redis-scripts.ts"
import { layerRedisStore, type RedisStoreOptions } from "../../src/registry/redis-store.ts"
import {
  BEACON_TTL_MS,
  type InboxItem,
  LEASE_MS,
  type RegisterInput,
  type RegisterOutcome,
  RegistryStore,
  type RegistryStoreShape
} from "../../src/registry/store.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { makeLogCapture } from "../support/log-capture.ts"
import { startRedisServer, uniqueKeyPrefix, useRedisServer } from "../support/redis-server.ts"
import { storeContract } from "./store-contract.ts"

const redis = useRedisServer()

storeContract("redis", () => layerRedisStore({ url: redis.url(), keyPrefix: uniqueKeyPrefix() }))

const T0 = 1_700_000_000_000
const key = (n: number) => Buffer.alloc(32, n % 256).toString("base64") + `#${n}`
const reg = (n: number, extra: Partial<RegisterInput> = {}): RegisterInput => ({
  publicKey: key(n),
  realAddr: `192.0.2.${n % 256}:4000`,
  relayOnly: false,
  nowMs: T0,
  ...extra
})

/** A store as one registry process would hold it: its own client, closed with the current scope. */
const openStore = (options: Partial<RedisStoreOptions> & { readonly keyPrefix: string }) =>
  Layer.build(layerRedisStore({ url: redis.url(), ...options })).pipe(Effect.map((context) => Context.get(context, RegistryStore)))

/** Two "registry processes" sharing one key space. */
const openPair = Effect.gen(function*() {
  const keyPrefix = uniqueKeyPrefix()
  return { keyPrefix, a: yield* openStore({ keyPrefix }), b: yield* openStore({ keyPrefix }) }
})

/** Raw commands, to inspect or prepare what the store keeps in Redis. */
const rawRedis = Effect.suspend(() => Layer.build(NodeRedis.layer({ url: redis.url() }))).pipe(
  Effect.map((context) => Context.get(context, Redis.Redis))
)

const registeredId = (outcome: RegisterOutcome): number => {
  assert(outcome._tag === "Registered", `expected Registered, got ${outcome._tag}`)
  return outcome.lease.nodeId
}

describe("redis store: several registry processes on one Redis", () => {
  it.live("each instance sees the other's nodes and hostnames", () =>
    Effect.gen(function*() {
      const { a, b } = yield* openPair
      const alpha = registeredId(yield* a.register(reg(1, { hostname: "alpha" })))
      assert.strictEqual((yield* b.lease(alpha, T0))?.hostname, "alpha")
      assert.strictEqual(yield* b.resolveHostname("alpha", T0), alpha)
      assert.strictEqual(yield* b.boundKey(alpha), key(1))
      const taken = yield* b.register(reg(2, { hostname: "alpha" }))
      assert(taken._tag === "Registered" && taken.hostnameTaken)
      assert.strictEqual(yield* b.setHostname(taken.lease.nodeId, "alpha", T0), "taken")
      assert.strictEqual(yield* a.setHostname(taken.lease.nodeId, "beta", T0), "ok")
      assert.strictEqual(yield* b.resolveHostname("beta", T0), taken.lease.nodeId)
      assert.strictEqual(registeredId(yield* b.register(reg(1, { nowMs: T0 + 1 }))), alpha) // reclaimed through b
      assert.strictEqual(yield* a.nodesOnline(T0 + 1), 2)
    }))

  it.live("an expired lease is gone for both, and its hostname is free through either", () =>
    Effect.gen(function*() {
      const { a, b } = yield* openPair
      const alpha = registeredId(yield* a.register(reg(1, { hostname: "alpha" })))
      assert.isTrue(yield* b.heartbeat(alpha, T0 + 60_000))
      const expired = T0 + 60_000 + LEASE_MS
      assert.isUndefined(yield* a.lease(alpha, expired))
      assert.isUndefined(yield* b.lease(alpha, expired))
      assert.isUndefined(yield* b.resolveHostname("alpha", expired))
      assert.isFalse(yield* a.heartbeat(alpha, expired))
      const other = yield* b.register(reg(2, { hostname: "alpha", nowMs: expired }))
      assert(other._tag === "Registered" && !other.hostnameTaken)
      assert.strictEqual(yield* a.resolveHostname("alpha", expired), other.lease.nodeId)
      assert.strictEqual(yield* a.nodesOnline(expired), 1)
    }))

  it.live("racing registrations of one new key through both instances always yield one node ID", () =>
    Effect.gen(function*() {
      const { a, b } = yield* openPair
      for (let n = 0; n < 100; n++) {
        const input = reg(n)
        const outcomes = yield* Effect.all([a, b, a, b].map((store) => store.register(input)), { concurrency: "unbounded" })
        const ids = new Set(outcomes.map(registeredId))
        assert.strictEqual(ids.size, 1, `key ${n} got node IDs ${[...ids].join(", ")}`)
        const fresh = outcomes.filter((o) => o._tag === "Registered" && !o.reclaimed)
        assert.strictEqual(fresh.length, 1, `key ${n}: exactly one registration binds it`)
      }
      // Distinct keys racing get distinct IDs: the counter is shared too.
      const distinct = yield* Effect.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).register(reg(1000 + i))),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(new Set(distinct.map(registeredId)).size, 40)
    }))

  it.live("racing hostname claims through both instances leave exactly one holder", () =>
    Effect.gen(function*() {
      const { a, b } = yield* openPair
      const ids = yield* Effect.all([1, 2, 3, 4].map((n) => a.register(reg(n))), { concurrency: "unbounded" })
      const outcomes = yield* Effect.all(
        ids.map((outcome, i) => (i % 2 === 0 ? a : b).setHostname(registeredId(outcome), "contested", T0)),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual([...outcomes].sort(), ["ok", "taken", "taken", "taken"])
      const winner = ids[outcomes.indexOf("ok")]
      assert(winner !== undefined)
      assert.strictEqual(yield* b.resolveHostname("contested", T0), registeredId(winner))
    }))
})

describe("redis store: bounds", () => {
  const tinyLimits: MemoryLimits = { maxNodes: 2, maxTrustReports: 1, maxBeacons: 1 }

  it.live("key bindings, trust reports and beacons are capped", () =>
    Effect.gen(function*() {
      const store = yield* openStore({ keyPrefix: uniqueKeyPrefix(), limits: tinyLimits })
      registeredId(yield* store.register(reg(1)))
      registeredId(yield* store.register(reg(2)))
      assert.deepStrictEqual(yield* store.register(reg(3)), { _tag: "Full" })
      assert.strictEqual(registeredId(yield* store.register(reg(1, { nowMs: T0 + 1 }))), 1) // known keys still register
      assert.strictEqual(yield* store.reportTrust(1, 2), "ok")
      assert.strictEqual(yield* store.reportTrust(1, 2), "ok")
      assert.strictEqual(yield* store.reportTrust(2, 1), "full")
      assert.strictEqual(yield* store.registerBeacon({ beaconId: 1, addr: "203.0.113.1:9001" }, T0), "ok")
      assert.strictEqual(yield* store.registerBeacon({ beaconId: 2, addr: "203.0.113.2:9001" }, T0), "full")
      // A quiet beacon makes room.
      assert.strictEqual(yield* store.registerBeacon({ beaconId: 2, addr: "203.0.113.2:9001" }, T0 + BEACON_TTL_MS), "ok")
    }))

  it.live("the node counter never hands out the broadcast address", () =>
    Effect.gen(function*() {
      const keyPrefix = uniqueKeyPrefix()
      const raw = yield* rawRedis
      yield* raw.send("SET", keyPrefix + keys.nextNode, String(0xfffffffd))
      const store = yield* openStore({ keyPrefix })
      assert.strictEqual(registeredId(yield* store.register(reg(1))), 0xfffffffe)
      assert.deepStrictEqual(yield* store.register(reg(2)), { _tag: "Full" })
    }))

  it.live("lease and hostname keys expire in Redis only long after the lease itself", () =>
    Effect.gen(function*() {
      const keyPrefix = uniqueKeyPrefix()
      const raw = yield* rawRedis
      const store = yield* openStore({ keyPrefix })
      const id = registeredId(yield* store.register(reg(1, { hostname: "alpha" })))
      for (const k of [`${keys.lease}${id}`, `${keys.hostname}alpha`]) {
        const ttl = yield* raw.send<number>("PTTL", keyPrefix + k)
        assert.isAbove(ttl, LEASE_MS + 30 * 60_000, k)
        assert.isAtMost(ttl, GC_TTL_MS, k)
      }
    }))
})

describe("redis store: failures", () => {
  const bound = 500
  /** The client logs each lost connection and refused reconnect as a warning; keep test output clean. */
  const quiet = Effect.provide(makeLogCapture().layer)

  it.live("a stopped Redis yields StoreError naming the operation, not a hang", () =>
    Effect.gen(function*() {
      const server = yield* startRedisServer
      const store = yield* Layer.build(layerRedisStore({ url: server.url, keyPrefix: uniqueKeyPrefix(), timeoutMs: bound })).pipe(
        Effect.map((context) => Context.get(context, RegistryStore))
      )
      const id = registeredId(yield* store.register(reg(1)))
      yield* server.stop
      const error = yield* store.lease(id, T0).pipe(Effect.flip, Effect.timeout(bound * 4))
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error.operation, "lease")
      assert.strictEqual(error.code, "store_unavailable")
    }).pipe(quiet))

  it.live("a Redis that is not there fails the layer with StoreError", () =>
    Effect.gen(function*() {
      const server = yield* startRedisServer
      yield* server.stop
      const error = yield* Layer.build(layerRedisStore({ url: server.url, timeoutMs: bound })).pipe(
        Effect.flip,
        Effect.timeout(bound * 4)
      )
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error.operation, "connect")
    }).pipe(quiet))

  it.live("a stuck Redis yields StoreError within the timeout, and closing the store does not wait for it", () =>
    Effect.gen(function*() {
      const server = yield* startRedisServer
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        layerRedisStore({ url: server.url, keyPrefix: uniqueKeyPrefix(), timeoutMs: bound }),
        scope
      )
      const store = Context.get(context, RegistryStore)
      registeredId(yield* store.register(reg(1)))
      yield* server.suspend
      const error = yield* store.register(reg(2)).pipe(Effect.flip, Effect.timeout(bound * 4))
      assert.strictEqual(error.operation, "register")
      assert.include(error.detail, `${bound} ms`)
      yield* Scope.close(scope, Exit.void).pipe(Effect.timeout(bound * 4))
      yield* server.resume
    }))

  it.live("closing the store leaves no Redis client handle or fiber behind", () =>
    expectNoLeaks(Effect.gen(function*() {
      const { a, b } = yield* openPair
      const id = registeredId(yield* a.register(reg(1, { hostname: "alpha" })))
      assert.strictEqual(yield* b.resolveHostname("alpha", T0), id)
      yield* b.pushInbox(id, { kind: "response", fromNodeId: 9, accept: true })
      assert.strictEqual((yield* a.drainInbox(id)).responses.length, 1)
    })))
})

/**
 * The embedded store's in-memory core is the reference model: any sequence of operations, with time moving on
 * by up to a few minutes between them, must give the same answers from Redis as from `MemoryState`.
 */
describe("redis store matches the embedded store", () => {
  type Step =
    | { op: "register"; node: number; hostname: string | undefined; owner: string | undefined }
    | { op: "heartbeat" | "lease" | "deregister" | "drain" | "boundKey"; node: number }
    | { op: "setHostname"; node: number; hostname: string }
    | { op: "setVisibility"; node: number; isPublic: boolean }
    | { op: "setTags"; node: number; tags: Array<string> }
    | { op: "resolve"; hostname: string }
    | { op: "rotate"; node: number; key: number }
    | { op: "reportTrust" | "revokeTrust" | "hasTrust"; node: number; peer: number }
    | { op: "push"; node: number; item: InboxItem }
    | { op: "beacon"; beacon: number }
    | { op: "listBeacons" | "nodesOnline" }

  const node = fc.integer({ min: 1, max: 5 })
  const hostname = fc.constantFrom("alpha", "beta", "gamma")
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.record({ op: fc.constant("register" as const), node, hostname: fc.option(hostname, { nil: undefined }), owner: fc.option(fc.constantFrom("", "ops@example.org"), { nil: undefined }) }),
    fc.record({ op: fc.constantFrom("heartbeat" as const, "lease" as const, "deregister" as const, "drain" as const, "boundKey" as const), node }),
    fc.record({ op: fc.constant("setHostname" as const), node, hostname: fc.oneof(hostname, fc.constant("")) }),
    fc.record({ op: fc.constant("setVisibility" as const), node, isPublic: fc.boolean() }),
    fc.record({ op: fc.constant("setTags" as const), node, tags: fc.array(fc.constantFrom("gpu", "eu", "x"), { maxLength: 3 }) }),
    fc.record({ op: fc.constant("resolve" as const), hostname }),
    fc.record({ op: fc.constant("rotate" as const), node, key: fc.integer({ min: 1, max: 8 }) }),
    fc.record({ op: fc.constantFrom("reportTrust" as const, "revokeTrust" as const, "hasTrust" as const), node, peer: node }),
    fc.record({
      op: fc.constant("push" as const),
      node,
      item: fc.oneof(
        fc.record({ kind: fc.constant("request" as const), fromNodeId: node, justification: fc.string({ maxLength: 8 }), signature: fc.constant("c2ln") }),
        fc.record({ kind: fc.constant("response" as const), fromNodeId: node, accept: fc.boolean() })
      )
    }),
    fc.record({ op: fc.constant("beacon" as const), beacon: fc.integer({ min: 1, max: 3 }) }),
    fc.record({ op: fc.constantFrom("listBeacons" as const, "nodesOnline" as const) })
  )
  const scenario = fc.array(fc.tuple(step, fc.constantFrom(0, 1, 1000, 30_000, 61_000, 90_000, LEASE_MS)), { minLength: 1, maxLength: 40 })
  const limits: MemoryLimits = { ...defaultMemoryLimits, maxNodes: 4, maxTrustReports: 6, maxBeacons: 2 }

  const apply = (store: RegistryStoreShape, s: Step, nowMs: number): Effect.Effect<unknown, unknown> => {
    switch (s.op) {
      case "register":
        return store.register({
          ...reg(s.node, { nowMs }),
          ...(s.hostname === undefined ? {} : { hostname: s.hostname }),
          ...(s.owner === undefined ? {} : { owner: s.owner })
        })
      case "heartbeat":
        return store.heartbeat(s.node, nowMs)
      case "lease":
        return store.lease(s.node, nowMs)
      case "deregister":
        return store.deregister(s.node)
      case "drain":
        return store.drainInbox(s.node)
      case "boundKey":
        return store.boundKey(s.node)
      case "setHostname":
        return store.setHostname(s.node, s.hostname, nowMs)
      case "setVisibility":
        return store.setVisibility(s.node, s.isPublic, nowMs)
      case "setTags":
        return store.setTags(s.node, s.tags, nowMs)
      case "resolve":
        return store.resolveHostname(s.hostname, nowMs)
      case "rotate":
        return store.rotateKey(s.node, key(s.key))
      case "reportTrust":
        return store.reportTrust(s.node, s.peer)
      case "revokeTrust":
        return store.revokeTrust(s.node, s.peer)
      case "hasTrust":
        return store.hasTrust(s.node, s.peer)
      case "push":
        return store.pushInbox(s.node, s.item)
      case "beacon":
        return store.registerBeacon({ beaconId: s.beacon, addr: `203.0.113.${s.beacon}:9001` }, nowMs)
      case "listBeacons":
        return Effect.map(store.listBeacons(nowMs), (list) => [...list].sort((x, y) => x.beaconId - y.beaconId))
      case "nodesOnline":
        return store.nodesOnline(nowMs)
    }
  }

  /** The embedded core behind the same interface (its operations cannot fail). */
  const modelStore = (state: MemoryState): RegistryStoreShape => ({
    register: (input) => Effect.sync(() => state.register(input)),
    heartbeat: (n, now) => Effect.sync(() => state.heartbeat(n, now)),
    lease: (n, now) => Effect.sync(() => state.lease(n, now)),
    nodeIdOfKey: (k) => Effect.sync(() => state.nodeIdOfKey(k)),
    boundKey: (n) => Effect.sync(() => state.boundKey(n)),
    resolveHostname: (h, now) => Effect.sync(() => state.resolveHostname(h, now)),
    setHostname: (n, h, now) => Effect.sync(() => state.setHostname(n, h, now)),
    setVisibility: (n, p, now) => Effect.sync(() => state.setVisibility(n, p, now)),
    setTags: (n, t, now) => Effect.sync(() => state.setTags(n, t, now)),
    deregister: (n) => Effect.sync(() => state.deregister(n)),
    rotateKey: (n, k) => Effect.sync(() => state.rotateKey(n, k)),
    reportTrust: (a, b) => Effect.sync(() => state.reportTrust(a, b)),
    revokeTrust: (a, b) => Effect.sync(() => state.revokeTrust(a, b)),
    hasTrust: (a, b) => Effect.sync(() => state.hasTrust(a, b)),
    pushInbox: (n, i) => Effect.sync(() => state.pushInbox(n, i)),
    drainInbox: (n) => Effect.sync(() => state.drainInbox(n)),
    registerBeacon: (b, now) => Effect.sync(() => state.registerBeacon(b, now)),
    listBeacons: (now) => Effect.sync(() => state.listBeacons(now)),
    nodesOnline: (now) => Effect.sync(() => state.nodesOnline(now))
  })

  it("gives the same answer to every operation", () =>
    fc.assert(
      fc.asyncProperty(scenario, (steps) =>
        Effect.runPromise(Effect.scoped(Effect.gen(function*() {
          const redisStore = yield* openStore({ keyPrefix: uniqueKeyPrefix(), limits })
          const model = modelStore(new MemoryState(limits))
          let nowMs = T0
          for (const [index, [s, advance]] of steps.entries()) {
            nowMs += advance
            const expected = yield* apply(model, s, nowMs)
            const actual = yield* apply(redisStore, s, nowMs)
            assert.deepStrictEqual(actual, expected, `step ${index}: ${JSON.stringify(s)} at +${nowMs - T0} ms`)
          }
        })))),
      { numRuns: 150 }
    ))
})

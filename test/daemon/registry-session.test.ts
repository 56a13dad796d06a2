/**
 * The daemon's registry session against a real in-process registry on loopback: registration, heartbeats,
 * re-registration, retries while the registry is down or half-open, and the shutdown race (a publish must never
 * land after the retract). Every session test ends with the lifecycle check (no fiber or handle left).
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Layer, Schedule, Scope } from "effect"
import fc from "fast-check"
import * as net from "node:net"
import { Identity } from "../../src/crypto/identity.ts"
import { makeRegistrySession, type RegistrySessionOptions } from "../../src/daemon/registry-session.ts"
import { type StepOutcome, StepRecorder } from "../../src/lifecycle/bounded.ts"
import { localFileSystem } from "../../src/platform/file-system.ts"
import { deregisterChallenge } from "../../src/protocol/registry.ts"
import type { RegistryClient } from "../../src/registry/client.ts"
import { layerEmbeddedStore } from "../../src/registry/embedded-store.ts"
import { RegistryStore, type RegistryStoreShape } from "../../src/registry/store.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { makeLogCapture } from "../support/log-capture.ts"
import { startRegistry } from "../support/registry.ts"

const HOST = "127.0.0.1"
const LISTEN_ADDR = "127.0.0.1:4000"

/**
 * An embedded store seen from the test: counts the heartbeats that renewed a lease, can slow `register` down (so a
 * registration is in flight for a while), and exposes the store itself.
 */
const makeProbeStore = (registerDelayMillis = 0) => {
  const probe = {
    renewals: new Map<number, number>(),
    store: undefined as RegistryStoreShape | undefined
  }
  const layer = Layer.effect(
    RegistryStore,
    Effect.gen(function*() {
      const inner = yield* RegistryStore
      probe.store = inner
      const wrapped: RegistryStoreShape = {
        ...inner,
        register: (input) => Effect.andThen(Effect.sleep(registerDelayMillis), inner.register(input)),
        heartbeat: (nodeId, nowMs) =>
          Effect.tap(inner.heartbeat(nodeId, nowMs), (renewed) =>
            Effect.sync(() => {
              if (renewed) probe.renewals.set(nodeId, (probe.renewals.get(nodeId) ?? 0) + 1)
            }))
      }
      return wrapped
    })
  ).pipe(Layer.provide(layerEmbeddedStore().pipe(Layer.provide(localFileSystem))))
  return { probe, layer }
}

/** Whether the registry holds a live lease for `nodeId`, asked over the wire. */
const isListed = (client: RegistryClient, nodeId: number) =>
  client.call({ type: "lookup", node_id: nodeId }).pipe(
    Effect.as(true),
    Effect.catchTag("RegistryRejected", (e) => e.code === "node_not_found" ? Effect.succeed(false) : Effect.fail(e))
  )

/** Polls `condition` until it holds; fails the test if it does not within `within`. */
const eventually = <E>(condition: Effect.Effect<boolean, E>, within: Duration.Input = "5 seconds") =>
  condition.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("10 millis") }),
    Effect.timeout(within),
    Effect.asVoid
  )

const freePort = Effect.callback<number>((resume) => {
  const probe = net.createServer()
  probe.listen(0, HOST, () => {
    const address = probe.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    probe.close(() => resume(Effect.succeed(port)))
  })
})

/**
 * A TCP proxy in front of the registry that can turn into a black hole: once switched, it drops every open
 * connection and accepts new ones without ever answering (a half-open registry).
 */
const startSwitchableProxy = (targetPort: number) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly port: number; readonly server: net.Server; readonly sockets: Set<net.Socket>; blackhole: boolean }>((resume) => {
      const sockets = new Set<net.Socket>()
      const track = (socket: net.Socket) => {
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
        socket.on("error", () => {})
      }
      const state = { port: 0, server: net.createServer(), sockets, blackhole: false }
      state.server.on("connection", (socket) => {
        track(socket)
        if (state.blackhole) return
        const upstream = net.connect(targetPort, HOST)
        track(upstream)
        socket.pipe(upstream)
        upstream.pipe(socket)
      })
      state.server.listen(0, HOST, () => {
        const address = state.server.address()
        state.port = typeof address === "object" && address !== null ? address.port : 0
        resume(Effect.succeed(state))
      })
    }),
    (proxy) =>
      Effect.callback<void>((resume) => {
        for (const socket of proxy.sockets) socket.destroy()
        proxy.server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((proxy) => ({
    port: proxy.port,
    blackhole: Effect.sync(() => {
      proxy.blackhole = true
      for (const socket of proxy.sockets) socket.destroy()
    })
  })))

const sessionOptions = (port: number, overrides: Partial<RegistrySessionOptions> = {}): RegistrySessionOptions => ({
  registry: { host: HOST, port, callTimeout: "2 seconds" },
  identity: Identity.generate(),
  listenAddr: LISTEN_ADDR,
  heartbeatInterval: "100 millis",
  backoff: { base: "20 millis", cap: "100 millis" },
  ...overrides
})

describe("registry session", () => {
  it.live("registers, keeps the lease renewed with signed heartbeats, and retracts it on shutdown", () =>
    expectNoLeaks(Effect.gen(function*() {
      const { layer, probe } = makeProbeStore()
      const { client, port } = yield* startRegistry({}, layer)
      const registry = yield* client()
      const logs = makeLogCapture()
      const scope = yield* Scope.make()
      const session = yield* makeRegistrySession(sessionOptions(port, { hostname: "alice" })).pipe(
        Effect.provide(logs.layer),
        Scope.provide(scope)
      )

      const nodeId = yield* session.nodeId.pipe(Effect.timeout("5 seconds"))
      yield* eventually(Effect.sync(() => (probe.renewals.get(nodeId) ?? 0) >= 3))
      const state = yield* session.state
      assert.deepStrictEqual(state.registered?.nodeId, nodeId)
      assert.strictEqual(state.consecutiveFailures, 0)
      assert.isDefined(state.lastOkMillis)
      const entry = yield* registry.call({ type: "lookup", node_id: nodeId })
      assert.strictEqual(entry["hostname"], "alice")

      yield* Scope.close(scope, Exit.void)
      assert.isFalse(yield* isListed(registry, nodeId))
      assert.isTrue(logs.at("Info").some((line) => line.message === `deregistered node ${nodeId}`))
    })))

  it.live("registers again at once when the node is deregistered behind its back", () =>
    expectNoLeaks(Effect.gen(function*() {
      const { client, port } = yield* startRegistry()
      const registry = yield* client()
      const options = sessionOptions(port, { backoff: { base: "30 seconds", cap: "30 seconds" } })
      const session = yield* makeRegistrySession(options).pipe(Effect.provide(makeLogCapture().layer))
      const nodeId = yield* session.nodeId.pipe(Effect.timeout("5 seconds"))

      yield* registry.call({ type: "deregister", node_id: nodeId, signature: options.identity.signChallenge(deregisterChallenge(nodeId)) })
      assert.isFalse(yield* isListed(registry, nodeId))
      // Well within the 15-30 s a backoff step would take: the re-registration did not wait for one.
      yield* eventually(isListed(registry, nodeId), "5 seconds")
      assert.strictEqual((yield* session.state).registered?.nodeId, nodeId)
    })))

  it.live("reregister registers again at once, long before the next heartbeat is due", () =>
    expectNoLeaks(Effect.gen(function*() {
      const { port } = yield* startRegistry()
      const logs = makeLogCapture()
      const session = yield* makeRegistrySession(sessionOptions(port, { heartbeatInterval: "1 hour" })).pipe(
        Effect.provide(logs.layer)
      )
      const nodeId = yield* session.nodeId.pipe(Effect.timeout("5 seconds"))
      const registrations = () => logs.at("Info").filter((line) => line.message.startsWith(`registered as node ${nodeId}`)).length
      // The node ID is handed out a moment before the line is logged.
      yield* eventually(Effect.sync(() => registrations() === 1), "5 seconds")
      yield* session.reregister
      yield* eventually(Effect.sync(() => registrations() === 2), "5 seconds")
      assert.isTrue(logs.at("Info").some((line) => line.message === "registering again on request"))
    })))

  it.live("a hostname changed at run time is the one later registrations carry", () =>
    expectNoLeaks(Effect.gen(function*() {
      const { client, port } = yield* startRegistry()
      const registry = yield* client()
      const logs = makeLogCapture()
      const options = sessionOptions(port, { hostname: "before", heartbeatInterval: "1 hour" })
      const session = yield* makeRegistrySession(options).pipe(Effect.provide(logs.layer))
      const nodeId = yield* session.nodeId.pipe(Effect.timeout("5 seconds"))
      assert.strictEqual((yield* registry.call({ type: "lookup", node_id: nodeId }))["hostname"], "before")

      session.setHostname("after")
      yield* session.reregister
      yield* eventually(
        Effect.map(registry.call({ type: "lookup", node_id: nodeId }), (entry) => entry["hostname"] === "after"),
        "5 seconds"
      )
    })))

  it.live("registers again at once with a fresh registry on the same port (node_not_found)", () =>
    expectNoLeaks(Effect.gen(function*() {
      const first = yield* Scope.make()
      const { port } = yield* startRegistry().pipe(Scope.provide(first))
      const logs = makeLogCapture()
      const session = yield* makeRegistrySession(
        sessionOptions(port, { heartbeatInterval: "200 millis", backoff: { base: "30 seconds", cap: "30 seconds" } })
      ).pipe(Effect.provide(logs.layer))
      const nodeId = yield* session.nodeId.pipe(Effect.timeout("5 seconds"))

      yield* Scope.close(first, Exit.void)
      const { client } = yield* startRegistry({ port })
      const registry = yield* client()
      yield* eventually(isListed(registry, nodeId).pipe(Effect.orElseSucceed(() => false)))
      assert.isTrue(logs.at("Warn").some((line) => line.message.includes("heartbeat refused (node_not_found)")))
    })))

  it.live("retries with backoff while the registry is down, one Warning per attempt, and registers once it is up", () =>
    expectNoLeaks(Effect.gen(function*() {
      const port = yield* freePort
      const logs = makeLogCapture()
      const session = yield* makeRegistrySession(sessionOptions(port)).pipe(Effect.provide(logs.layer))
      yield* eventually(Effect.map(session.state, (s) => s.consecutiveFailures >= 3))
      const down = yield* session.state
      assert.isUndefined(down.registered)
      assert.include(down.lastError, port.toString())

      const { client } = yield* startRegistry({ port })
      const nodeId = yield* session.nodeId.pipe(Effect.timeout("5 seconds"))
      assert.isTrue(yield* isListed(yield* client(), nodeId))
      const attempts = logs.at("Warn").map((line) => /^registration attempt (\d+) failed/.exec(line.message)?.[1])
      assert.isAtLeast(attempts.length, 3)
      assert.deepStrictEqual(attempts, attempts.map((_, i) => String(i + 1)))
    })))

  it.live("a half-open registry costs one deadline per call: the session keeps retrying and shuts down in bounded time", () =>
    expectNoLeaks(Effect.gen(function*() {
      const { port: registryPort } = yield* startRegistry()
      const proxy = yield* startSwitchableProxy(registryPort)
      const logs = makeLogCapture()
      const steps: Array<StepOutcome> = []
      const scope = yield* Scope.make()
      const session = yield* makeRegistrySession(sessionOptions(proxy.port, {
        registry: { host: HOST, port: proxy.port, callTimeout: "150 millis" },
        heartbeatInterval: "50 millis"
      })).pipe(
        Effect.provide(logs.layer),
        Effect.provideService(StepRecorder, (outcome) => Effect.sync(() => steps.push(outcome))),
        Scope.provide(scope)
      )
      yield* session.nodeId.pipe(Effect.timeout("5 seconds"))

      yield* proxy.blackhole
      // 3 missed heartbeats, then registration attempts, each cut at the deadline.
      yield* eventually(Effect.map(session.state, (s) => s.registered === undefined && s.consecutiveFailures >= 6), "10 seconds")
      assert.include((yield* session.state).lastError, "no reply")
      assert.isAtLeast(logs.at("Warn").filter((line) => line.message.startsWith("registration attempt")).length, 2)

      yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("5 seconds"))
      const [deregister] = steps
      assert.strictEqual(deregister?.step, "deregister from the registry")
      // The retract could not get through; it failed at the call deadline rather than hanging shutdown.
      assert.strictEqual(deregister?._tag, "Failed")
    })))

  it.live("a shutdown racing heartbeats and re-registrations leaves no entry, and nothing re-creates it", () =>
    expectNoLeaks(Effect.gen(function*() {
      const { layer, probe } = makeProbeStore(15)
      const { client, port } = yield* startRegistry({ registrationsPerMinute: 100_000 }, layer)
      const registry = yield* client()
      const store = probe.store!
      const heartbeatMillis = 10
      const context = yield* Effect.context<never>()

      const race = (shutdownAfterMillis: number, yankEveryMillis: number) =>
        Effect.gen(function*() {
          const identity = Identity.generate()
          const scope = yield* Scope.make()
          const session = yield* makeRegistrySession({
            ...sessionOptions(port, { heartbeatInterval: `${heartbeatMillis} millis`, backoff: { base: "5 millis", cap: "20 millis" } }),
            identity
          }).pipe(Effect.provide(makeLogCapture().layer), Scope.provide(scope))
          // Takes the lease away over and over, so that re-registrations are in flight as often as heartbeats.
          const yanker = yield* Effect.forkChild(Effect.gen(function*() {
            while (true) {
              yield* Effect.sleep(yankEveryMillis)
              const state = yield* session.state
              if (state.registered !== undefined) yield* store.deregister(state.registered.nodeId)
            }
          }))
          yield* Effect.sleep(shutdownAfterMillis)
          yield* Fiber.interrupt(yanker)
          yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("5 seconds"))

          const nodeId = yield* store.nodeIdOfKey(identity.publicKeyBase64)
          if (nodeId === undefined) return // never registered: nothing to leave behind
          assert.isFalse(yield* isListed(registry, nodeId), "an entry survived the shutdown")
          // Longer than several heartbeat intervals and a slowed registration: nothing in flight may land now.
          yield* Effect.sleep(Duration.millis(6 * heartbeatMillis + 50))
          assert.isFalse(yield* isListed(registry, nodeId), "an entry was re-created after the shutdown")
        })

      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(
            fc.integer({ min: 0, max: 150 }),
            fc.integer({ min: 5, max: 40 }),
            (shutdownAfterMillis, yankEveryMillis) =>
              Effect.runPromiseWith(context)(race(shutdownAfterMillis, yankEveryMillis))
          ),
          { numRuns: 30 }
        )
      )
    }), { settleMillis: 2000 }), 60_000)
})

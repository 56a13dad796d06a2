/**
 * Shutdown raced against live work at random points (issue 8, DESIGN.md §4 rules 2 and 4, §7).
 *
 * Part 1, simulated: real data planes (tunnel + transport + echo) on a seeded simulated network under
 * `TestClock` (test/sim/). fast-check picks the link conditions, the work in flight and the moment a node's
 * scope is closed; after every run: the scope closed within its bound of simulated time, the partner observed a
 * reset or timed out cleanly within its bound, no fiber ended with an unexpected error or a defect, and no fiber
 * is left (the fiber runtime metrics, via the lifecycle oracle). A failing run prints fast-check's seed and the
 * network's (`SIM_SEED=<n>` replays the network with that seed).
 *
 * Part 2, real components where `TestClock` cannot drive them (sockets, files, child work): the whole daemon
 * (`runDaemon`, in process, against an in-process registry) interrupted at a random moment while registration,
 * heartbeats, IPC clients stalled mid-write, trust saves and a relayed handshake poll are in flight. The
 * existing focused properties stay where they are (registry-session.test.ts: heartbeats vs re-registration;
 * trust-store.test.ts: saves in flight; ipc/server.test.ts: stalled clients); this one races them all at once
 * through the composition root, with the oracle's full end-state check.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Layer, Option, Result, type Scope } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import * as fs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import { decodeIdentityFile } from "../../src/crypto/identity.ts"
import { runDaemon } from "../../src/daemon/daemon.ts"
import { ExitCode, exitCodeOf } from "../../src/platform/exit-codes.ts"
import { localFileSystem } from "../../src/platform/file-system.ts"
import { makeAddr } from "../../src/protocol/address.ts"
import { layerEmbeddedStore } from "../../src/registry/embedded-store.ts"
import { RegistryStore, type RegistryStoreShape } from "../../src/registry/store.ts"
import type { Connection } from "../../src/transport/transport.ts"
import { decodeTrustFile } from "../../src/trust/trust-file.ts"
import { connectClient, connectStalledClient, frame } from "../ipc/ipc-test-kit.ts"
import { makeSimNode, type SimNode, SimDirectory } from "../sim/sim-node.ts"
import { makeSimWorld, SIM_SEED_ENV, type SimWorld } from "../sim/simulated-socket.ts"
import { checkEndState, expectCleanLifecycle, registryListing, type StateFileExpectation } from "../support/lifecycle-oracle.ts"
import { makeLogCapture } from "../support/log-capture.ts"
import { startRegistry } from "../support/registry.ts"
import type { LinkConditions } from "../transport/simulated-network.ts"

// ---------------------------------------------------------------------------------------------------------
// Part 1: the simulated network

/** A node's scope must close within this much simulated time: reset connections (1 s bound) and join. */
const SHUTDOWN_BOUND_MS = 2_000
/**
 * The partner of a node that vanished must notice within this much simulated time: a reset at once, else its
 * retransmit budget (8 RTOs, capped at 10 s each), else the 2-minute idle timeout.
 */
const PARTNER_BOUND_MS = 200_000
const STEP_MS = 10

/** Seeds the network: fast-check's choice, or `SIM_SEED` to replay one network. */
const networkSeed = (): fc.Arbitrary<number> => {
  const pinned = process.env[SIM_SEED_ENV]
  return pinned === undefined || pinned === "" ? fc.integer({ min: 0, max: 0x7fff_ffff }) : fc.constant(Number(pinned))
}

const linkConditions: fc.Arbitrary<LinkConditions> = fc.record({
  loss: fc.double({ min: 0, max: 0.2, noNaN: true }),
  duplicate: fc.double({ min: 0, max: 0.1, noNaN: true }),
  reorder: fc.double({ min: 0, max: 0.1, noNaN: true }),
  delayMs: fc.integer({ min: 1, max: 80 }),
  jitterMs: fc.integer({ min: 0, max: 20 })
})

/** Advances the `TestClock` in steps until `done` holds; the simulated ms it took, or `undefined` past `boundMs`. */
const driveUntil = (done: () => boolean, boundMs: number): Effect.Effect<number | undefined> =>
  Effect.gen(function*() {
    for (let elapsed = 0; elapsed <= boundMs; elapsed += STEP_MS) {
      if (done()) return elapsed
      yield* TestClock.adjust(STEP_MS)
    }
    return done() ? boundMs : undefined
  })

/** Closes the node's scope in a fiber and drives time until it has closed; fails the run past the bound. */
const shutDownWithin = (world: SimWorld, node: SimNode) =>
  Effect.gen(function*() {
    const closing = yield* Effect.forkChild(node.shutdown)
    const took = yield* driveUntil(() => closing.pollUnsafe() !== undefined, SHUTDOWN_BOUND_MS)
    assert.isDefined(took, `node ${node.nodeId} still closing after ${SHUTDOWN_BOUND_MS} simulated ms [${world.describe()}]`)
    const exit = yield* Fiber.await(closing)
    assert.isTrue(Exit.isSuccess(exit), `closing node ${node.nodeId} failed: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
  })

/** Errors a stream user may see when its peer or its own node goes away: anything else is a bug. */
const EXPECTED_FAILURES = new Set([
  "reset_by_peer",
  "connection_refused",
  "dial_timeout",
  "retransmit_budget_exhausted",
  "idle_timeout",
  "zero_window_timeout",
  "closed"
])

/** Asserts a worker fiber ended in an accepted way: success, interruption, or an expected stream/transport error. */
const assertCleanEnd = (world: SimWorld, name: string, exit: Exit.Exit<unknown, { readonly reason: string }>) => {
  if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) return
  assert.isFalse(Cause.hasDies(exit.cause), `${name} died: ${Cause.pretty(exit.cause)} [${world.describe()}]`)
  const error = Cause.squash(exit.cause) as { readonly reason?: string }
  assert.isTrue(EXPECTED_FAILURES.has(error.reason ?? ""), `${name} failed unexpectedly: ${Cause.pretty(exit.cause)} [${world.describe()}]`)
}

/** Runs one simulated scenario under a fresh `TestClock`, with the oracle's fiber and handle check around it. */
const runSimulated = <E>(scenario: Effect.Effect<void, E, Scope.Scope>): Promise<void> =>
  Effect.runPromise(
    expectCleanLifecycle(scenario).pipe(Effect.provide([TestClock.layer(), makeLogCapture().layer]), Effect.orDie)
  )

const writeAll = (conn: Connection, total: number, seed: number) =>
  Effect.gen(function*() {
    let written = 0
    while (written < total) {
      const size = Math.min(1 + ((seed + written) % 3000), total - written)
      yield* conn.write(new Uint8Array(size).fill(written & 0xff))
      written += size
    }
    yield* conn.close
  })

const readAll = (conn: Connection) =>
  Effect.gen(function*() {
    let received = 0
    while (true) {
      const chunk = yield* conn.read
      if (chunk === undefined) return received
      received += chunk.byteLength
    }
  })

describe("shutdown races on the simulated network (TestClock)", () => {
  it.effect("key exchange retransmitting to a peer behind a partition: the node stops within its bound, nothing left", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          networkSeed(),
          fc.integer({ min: 0, max: 30_000 }),
          fc.integer({ min: 0, max: 30_000 }),
          (seed, healsAt, shutdownAt) =>
            runSimulated(Effect.gen(function*() {
              const world = yield* makeSimWorld({
                seed,
                conditions: { loss: 0, duplicate: 0, reorder: 0, delayMs: 15, jitterMs: 5, partitions: [{ from: 0, to: healsAt }] }
              })
              const directory = new SimDirectory()
              const a = yield* makeSimNode(world, directory, 1)
              const b = yield* makeSimNode(world, directory, 2)
              // A dial: its SYN waits for a key exchange that keeps retransmitting while the partition holds.
              const dial = yield* Effect.forkIn(
                Effect.flatMap(a.plane.transport.dial(b.addr, 7), (conn) => Effect.andThen(conn.write(new Uint8Array(64)), conn.close)),
                a.scope
              )
              yield* driveUntil(() => false, shutdownAt)
              yield* shutDownWithin(world, a)
              assertCleanEnd(world, "dial", yield* Fiber.await(dial))
              yield* shutDownWithin(world, b)
            }))
        ),
        { numRuns: 25 }
      )
    ), 120_000)

  it.effect("a stream transfer in flight: either side stops at a random moment, the partner sees a reset or times out", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          networkSeed(),
          linkConditions,
          fc.integer({ min: 1, max: 400_000 }),
          fc.constantFrom("dialer", "echo"),
          fc.integer({ min: 0, max: 3_000 }),
          (seed, conditions, bytes, victim, shutdownAt) =>
            runSimulated(Effect.gen(function*() {
              const world = yield* makeSimWorld({ seed, conditions })
              const directory = new SimDirectory()
              const a = yield* makeSimNode(world, directory, 1)
              const b = yield* makeSimNode(world, directory, 2)
              const conn = yield* Effect.forkIn(a.plane.transport.dial(b.addr, 7), a.scope)
              const transfer = yield* Effect.forkIn(
                Effect.flatMap(Fiber.join(conn), (c) =>
                  Effect.all([writeAll(c, bytes, seed), readAll(c)], { concurrency: 2 })),
                a.scope
              )
              yield* driveUntil(() => transfer.pollUnsafe() !== undefined, shutdownAt)
              if (victim === "dialer") {
                yield* shutDownWithin(world, a)
                assertCleanEnd(world, "transfer", yield* Fiber.await(transfer))
                // The echo side holds no connection once it saw the reset (or gave up on the silent peer).
                const gone = yield* driveUntil(() => b.plane.transport.connections().length === 0, PARTNER_BOUND_MS)
                assert.isDefined(gone, `the echo side still holds ${b.plane.transport.connections().length} connection(s) [${world.describe()}]`)
                yield* shutDownWithin(world, b)
              } else {
                yield* shutDownWithin(world, b)
                const ended = yield* driveUntil(() => transfer.pollUnsafe() !== undefined, PARTNER_BOUND_MS)
                assert.isDefined(ended, `the dialer's transfer still running ${PARTNER_BOUND_MS} ms after the echo node stopped [${world.describe()}]`)
                assertCleanEnd(world, "transfer", yield* Fiber.await(transfer))
                yield* shutDownWithin(world, a)
              }
            }))
        ),
        { numRuns: 25 }
      )
    ), 180_000)

  it.effect("a stalled stream consumer: stopping either side ends the other's blocked write or idle connection", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          networkSeed(),
          linkConditions,
          fc.constantFrom("writer", "stalled reader"),
          fc.integer({ min: 0, max: 5_000 }),
          (seed, conditions, victim, shutdownAt) =>
            runSimulated(Effect.gen(function*() {
              const world = yield* makeSimWorld({ seed, conditions })
              const directory = new SimDirectory()
              const a = yield* makeSimNode(world, directory, 1)
              const b = yield* makeSimNode(world, directory, 2)
              // B accepts on port 1000 and never reads: A's writes fill B's window, then block.
              const accepted = yield* Effect.forkIn(
                Effect.flatMap(b.plane.transport.listen(1000), (listener) => Effect.andThen(listener.accept, Effect.never)),
                b.scope
              )
              const writer = yield* Effect.forkIn(
                Effect.flatMap(a.plane.transport.dial(makeAddr(0, b.nodeId), 1000), (c) => writeAll(c, 50_000_000, seed)),
                a.scope
              )
              yield* driveUntil(() => false, shutdownAt)
              assert.isUndefined(writer.pollUnsafe(), `the writer finished 50 MB into a stalled reader [${world.describe()}]`)
              if (victim === "stalled reader") {
                yield* shutDownWithin(world, b)
                const ended = yield* driveUntil(() => writer.pollUnsafe() !== undefined, PARTNER_BOUND_MS)
                assert.isDefined(ended, `the blocked writer still waiting ${PARTNER_BOUND_MS} ms after the reader's node stopped [${world.describe()}]`)
                assertCleanEnd(world, "writer", yield* Fiber.await(writer))
                yield* shutDownWithin(world, a)
              } else {
                yield* shutDownWithin(world, a)
                assertCleanEnd(world, "writer", yield* Fiber.await(writer))
                const gone = yield* driveUntil(() => b.plane.transport.connections().length === 0, PARTNER_BOUND_MS)
                assert.isDefined(gone, `the stalled reader's node still holds its connection [${world.describe()}]`)
                yield* shutDownWithin(world, b)
                assert.isDefined(accepted.pollUnsafe(), "the accept fiber ended with its node")
              }
            }))
        ),
        { numRuns: 25 }
      )
    ), 180_000)
})

// ---------------------------------------------------------------------------------------------------------
// Part 2: the whole daemon, in process, on real sockets

/** The binary's graceful-shutdown deadline (src/daemon/main.ts): past it the process is ended by force (exit 5). */
const DAEMON_SHUTDOWN_DEADLINE = "20 seconds"

/** An embedded store whose instance the test can ask (`nodeIdOfKey`): which node ID a daemon got, if any. */
const capturingStore = () => {
  const captured: { store?: RegistryStoreShape } = {}
  const layer = Layer.effect(
    RegistryStore,
    Effect.gen(function*() {
      const store = yield* RegistryStore
      captured.store = store
      return store
    })
  ).pipe(Layer.provide(layerEmbeddedStore().pipe(Layer.provide(localFileSystem))))
  return { captured, layer }
}

interface DaemonRacePlan {
  /** The daemon starts with a registry (registers, then heartbeats) or without one (registration backoff). */
  readonly registryUp: boolean
  readonly public: boolean
  readonly autoApprove: boolean
  /** A client that sends half a frame and stalls; a client that floods requests and never reads. */
  readonly stalledMidWrite: boolean
  readonly floodingNonReader: boolean
  /** Handshake requests to a node nobody can reach (relayed through the registry, fast relay polls, trust saves). */
  readonly handshakes: boolean
  readonly shutdownAfterMillis: number
}

const daemonRacePlan: fc.Arbitrary<DaemonRacePlan> = fc.record({
  registryUp: fc.boolean(),
  public: fc.boolean(),
  autoApprove: fc.boolean(),
  stalledMidWrite: fc.boolean(),
  floodingNonReader: fc.boolean(),
  handshakes: fc.boolean(),
  shutdownAfterMillis: fc.integer({ min: 0, max: 1500 })
})

/** Polls (real time) until `path` exists, at most `within` ms; false if it never appeared. */
const fileAppears = (path: string, within: number) =>
  Effect.gen(function*() {
    const until = performance.now() + within
    while (!fs.existsSync(path)) {
      if (performance.now() > until) return false
      yield* Effect.sleep("5 millis")
    }
    return true
  })

/** Keeps asking for handshakes (each a trust change, a relayed request and a fast-poll window) until interrupted. */
const handshakeTraffic = (socketPath: string) =>
  Effect.gen(function*() {
    const client = yield* connectClient(socketPath)
    for (let i = 0;; i++) {
      yield* client.roundTrip({ cmd: "Handshake", sub: "Send", node: 4_000_000 + (i % 8), justification: `race ${i}` })
      yield* client.roundTrip({ cmd: "Handshake", sub: "Pending" }) // an on-demand relay poll
    }
  }).pipe(Effect.scoped, Effect.ignore)

const raceDaemon = (dir: string, registryPort: number, store: () => RegistryStoreShape | undefined, plan: DaemonRacePlan) =>
  Effect.gen(function*() {
    const socketPath = nodePath.join(dir, "d.sock")
    const identityPath = nodePath.join(dir, "identity.json")
    const daemon = yield* Effect.forkChild(runDaemon({
      identityPath,
      listen: { host: "127.0.0.1", port: 0 },
      socketPath,
      registry: { host: "127.0.0.1", port: registryPort },
      endpoint: Option.none(),
      beacon: Option.none(),
      relayOnly: false,
      webhook: Option.none(),
      hostname: Option.some("racer"),
      http: Option.none(),
      public: plan.public,
      trustAutoApprove: plan.autoApprove
    }).pipe(Effect.provide([makeLogCapture().layer, localFileSystem])))

    if (yield* fileAppears(socketPath, 5000)) {
      if (plan.stalledMidWrite) {
        const stalled = yield* connectStalledClient(socketPath)
        const bytes = frame({ cmd: "Handshake", sub: "Send", node: 7, justification: "x".repeat(200) })
        yield* stalled.write(bytes.subarray(0, Math.floor(bytes.byteLength / 2)))
      }
      if (plan.floodingNonReader) {
        const flooder = yield* connectStalledClient(socketPath)
        const info = frame({ cmd: "Info" })
        for (let i = 0; i < 2000; i++) yield* flooder.write(info)
      }
      if (plan.handshakes) yield* Effect.forkScoped(handshakeTraffic(socketPath))
    }
    yield* Effect.sleep(plan.shutdownAfterMillis)

    yield* Fiber.interrupt(daemon).pipe(
      Effect.timeoutOrElse({ duration: DAEMON_SHUTDOWN_DEADLINE, orElse: () => Effect.die(new Error(`shutdown overran ${DAEMON_SHUTDOWN_DEADLINE}`)) })
    )
    const exit = yield* Fiber.await(daemon)
    assert.strictEqual(exitCodeOf(exit), ExitCode.ok, `exit ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "success"}`)

    const identity = decodeIdentityFile(identityPath, fs.readFileSync(identityPath, "utf8"))
    assert.isTrue(Result.isSuccess(identity), "identity file complete")
    const nodeId = Result.isSuccess(identity) ? yield* (store()?.nodeIdOfKey(identity.success.publicKeyBase64) ?? Effect.succeed(undefined)) : undefined
    return { socketPath, nodeId, trustPath: nodePath.join(dir, "trust.json") }
  })

describe("shutdown races in the whole daemon (real sockets)", () => {
  it.live("interrupted at a random moment amid registration, stalled IPC clients, handshakes and relay polls: exit 0, nothing left", () =>
    Effect.gen(function*() {
      const { captured, layer } = capturingStore()
      const up = yield* startRegistry({ registrationsPerMinute: 100_000 }, layer)
      const registry = yield* up.client()
      const isListed = registryListing(registry)
      // A port with nothing behind it: registration keeps backing off.
      const down = yield* startRegistry().pipe(Effect.scoped, Effect.map((r) => r.port))
      // A round trip lets the registry's own background fibers (reaper, gauges) start and arm their timers before
      // the first run's baseline is taken: they belong to the registry, not to the daemon under test.
      yield* Effect.ignore(registry.call({ type: "lookup", node_id: 1 }))
      const context = yield* Effect.context<never>()
      const runs = { registered: 0, trustSaved: 0 }

      const race = (plan: DaemonRacePlan) =>
        Effect.gen(function*() {
          const dir = fs.mkdtempSync(nodePath.join(os.tmpdir(), "pf-race-"))
          yield* Effect.gen(function*() {
            const ended = yield* expectCleanLifecycle(
              raceDaemon(dir, plan.registryUp ? up.port : down, () => captured.store, plan),
              {},
              { settleMillis: 3000 }
            )
            const stateFiles: Array<StateFileExpectation> = []
            if (fs.existsSync(ended.trustPath)) {
              runs.trustSaved++
              stateFiles.push({ path: ended.trustPath, parse: (text) => decodeTrustFile(text, Date.now()) })
            }
            if (ended.nodeId !== undefined) runs.registered++
            yield* checkEndState({
              socketFiles: [ended.socketPath],
              stateFiles,
              ...(ended.nodeId === undefined ? {} : { registry: { isListed, nodeIds: [ended.nodeId], recheckAfter: "300 millis" } })
            })
          }).pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
        })

      yield* Effect.promise(() =>
        fc.assert(fc.asyncProperty(daemonRacePlan, (plan) => Effect.runPromiseWith(context)(race(plan))), { numRuns: 12 })
      )
      // The property is only worth something if the interesting states were reached in some runs.
      assert.isAbove(runs.registered, 0, "no run registered before its shutdown")
    }), 180_000)
})

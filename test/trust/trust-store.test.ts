import { assert, describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber, FileSystem, Layer, Path, Result, Scope } from "effect"
import { systemError } from "effect/PlatformError"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { localFileSystem } from "../../src/platform/file-system.ts"
import { decodeTrustFile, encodeTrustFile } from "../../src/trust/trust-file.ts"
import { makeTrustStore, type TrustStore } from "../../src/trust/trust-store.ts"
import { emptyTrustState, type TrustPolicy } from "../../src/trust/trust-state.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { makeLogCapture } from "../support/log-capture.ts"
import { keyOf } from "./fixtures.ts"

const policy: TrustPolicy = { trustedAgents: new Set([3]), autoApprove: false }

/** Injected disk faults: while `remaining` > 0, each write of a temp file fails (ENOSPC-like) and is counted. */
interface DiskFaults {
  remaining: number
  triggered: number
}

/** The real file system, except that writes to writeFileAtomic's temp files fail while faults remain. */
const faultyFileSystem = (faults: DiskFaults) =>
  Layer.effect(
    FileSystem.FileSystem,
    Effect.map(Effect.service(FileSystem.FileSystem), (real) =>
      FileSystem.FileSystem.of({
        ...real,
        open: (file, options) =>
          Effect.map(real.open(file, options), (handle): FileSystem.File =>
            !file.endsWith(".tmp") ? handle : {
              ...handle,
              get stat() {
                return handle.stat
              },
              get sync() {
                return handle.sync
              },
              writeAll: (buffer) =>
                Effect.suspend(() => {
                  if (faults.remaining === 0) return handle.writeAll(buffer)
                  faults.remaining--
                  faults.triggered++
                  return Effect.fail(systemError({
                    _tag: "Unknown",
                    module: "FileSystem",
                    method: "writeAll",
                    pathOrDescriptor: file,
                    description: "injected fault"
                  }))
                })
            })
      }))
  ).pipe(Layer.provide(localFileSystem))

const tempDir = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "pilotfish-trust-" })
  return { fs, dir, file: path.join(dir, "trust.json") }
})

/** The file's content as the store would encode it at `now` (a missing file is the empty state). */
const fileAsEncoded = (fs: FileSystem.FileSystem, file: string, now: number) =>
  Effect.gen(function*() {
    if (!(yield* fs.exists(file))) return encodeTrustFile(emptyTrustState, now)
    const decoded = decodeTrustFile(yield* fs.readFileString(file), now)
    assert.isTrue(Result.isSuccess(decoded), "the file on disk must always be parseable")
    return encodeTrustFile(Result.isSuccess(decoded) ? decoded.success.state : emptyTrustState, now)
  })

/** One turn of the real event loop, so real file I/O can progress while the TestClock stands still. */
const ioTurn = Effect.callback<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/** Advances the TestClock in `step`s, letting real I/O run in between, until `fiber` is done. */
const driveClockUntilDone = <A, E>(fiber: Fiber.Fiber<A, E>, step: number) =>
  Effect.gen(function*() {
    while (fiber.pollUnsafe() === undefined) {
      yield* TestClock.adjust(step)
      yield* ioTurn
    }
    return yield* Fiber.join(fiber)
  })

describe("trust store", () => {
  it.effect("loads trust.json, saves changes to it with mode 0600, and saves the rest at scope close", () =>
    Effect.gen(function*() {
      const { fs, dir, file } = yield* tempDir
      const scope = yield* Scope.make()
      const store = yield* makeTrustStore({ directory: dir, policy, saveDebounce: "1 second" }).pipe(Scope.provide(scope))
      expect(store.loaded).toEqual({ _tag: "Missing" })
      yield* store.receiveRequest({ node_id: 3, public_key: keyOf(3), registryBound: true })
      yield* store.flush
      assert.strictEqual((yield* fs.stat(file)).mode & 0o777, 0o600)
      yield* store.receiveRequest({ node_id: 5, public_key: keyOf(5), justification: "hi", registryBound: false })
      yield* Scope.close(scope, Exit.void) // before the debounce: the final save writes it
      const reopened = yield* makeTrustStore({ directory: dir, policy })
      expect(reopened.loaded).toEqual({ _tag: "Loaded", skipped: 0 })
      const state = yield* reopened.state
      expect([...state.trusted.keys()]).toEqual([3])
      expect(state.pending.get(5)).toEqual({ node_id: 5, public_key: keyOf(5), justification: "hi", received_at: 0 })
    }).pipe(Effect.provide(localFileSystem)))

  it.effect("an unparseable file loads as empty, is reported, and is left untouched until trust changes", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const { fs, dir, file } = yield* tempDir
      yield* fs.writeFileString(file, "{ not json")
      const first = yield* Scope.make()
      const store = yield* makeTrustStore({ directory: dir, policy }).pipe(Scope.provide(first))
      assert.strictEqual(store.loaded._tag, "Unparseable")
      expect(yield* store.state).toEqual(emptyTrustState)
      assert.include(logs.at("Error")[0]?.text, "unparseable")
      yield* store.receiveReject(9) // no persisted change
      yield* TestClock.adjust("1 minute")
      yield* Scope.close(first, Exit.void)
      assert.strictEqual(yield* fs.readFileString(file), "{ not json")

      const second = yield* makeTrustStore({ directory: dir, policy })
      yield* second.receiveRequest({ node_id: 3, public_key: keyOf(3), registryBound: true })
      yield* second.flush
      assert.strictEqual(yield* fs.readFileString(file), encodeTrustFile(yield* second.state, 0))
    }).pipe(Effect.provide([localFileSystem, logs.layer]))
  })

  it.effect("a failing disk write is retried and reported, never dropped", () => {
    const logs = makeLogCapture()
    const faults: DiskFaults = { remaining: 2, triggered: 0 }
    return Effect.gen(function*() {
      const { fs, dir, file } = yield* tempDir
      const store = yield* makeTrustStore({ directory: dir, policy })
      yield* store.receiveRequest({ node_id: 3, public_key: keyOf(3), registryBound: true })
      yield* driveClockUntilDone(yield* Effect.forkChild(store.flush), 50) // through the retry schedule
      assert.strictEqual(faults.triggered, 2)
      expect(logs.at("Warn").map((w) => w.text).filter((t) => t.includes("injected fault"))).toHaveLength(2)
      assert.strictEqual(yield* fs.readFileString(file), encodeTrustFile(yield* store.state, 0))
      // flush and the saver fiber may both have written the same version: the count of saves is not the point
      expect(yield* store.saverStats).toMatchObject({ failures: 2, unsaved: false })
    }).pipe(
      Effect.provide([faultyFileSystem(faults), logs.layer]),
      Effect.provide(localFileSystem)
    )
  })

  it.live("stops cleanly: no fiber or handle left after its scope closes", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.scoped(Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        return yield* fs.makeTempDirectory({ prefix: "pilotfish-trust-leak-" })
      }))
      yield* expectNoLeaks(Effect.gen(function*() {
        const store = yield* makeTrustStore({ directory: dir, policy, saveDebounce: "10 millis" })
        yield* store.receiveRequest({ node_id: 3, public_key: keyOf(3), registryBound: true })
        yield* store.receiveRequest({ node_id: 4, public_key: keyOf(4), registryBound: false })
      }))
      const fs = yield* FileSystem.FileSystem
      assert.include(yield* fs.readFileString(`${dir}/trust.json`), `"node_id": 4`)
      yield* fs.remove(dir, { recursive: true })
    }).pipe(Effect.provide(localFileSystem)))
})

type Step =
  | { readonly op: "request"; readonly peer: number; readonly bound: boolean; readonly network: number | undefined }
  | { readonly op: "approve" | "reject" | "revoke" | "outgoing" | "accept" | "peerReject" | "peerRevoke"; readonly peer: number }
  | { readonly op: "advance"; readonly millis: number }
  | { readonly op: "fail"; readonly count: number }
  /** Lets real file I/O progress (saves start, finish or fail) while the TestClock stands still. */
  | { readonly op: "io"; readonly turns: number }

const peer = fc.integer({ min: 1, max: 4 })
const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ op: fc.constant("request" as const), peer, bound: fc.boolean(), network: fc.option(fc.integer({ min: 0, max: 2 }), { nil: undefined }) }),
  fc.record({ op: fc.constantFrom("approve" as const, "reject" as const, "revoke" as const, "outgoing" as const, "accept" as const, "peerReject" as const, "peerRevoke" as const), peer }),
  fc.record({ op: fc.constant("advance" as const), millis: fc.oneof(fc.integer({ min: 0, max: 50 }), fc.integer({ min: 0, max: 600_000 })) }),
  fc.record({ op: fc.constant("fail" as const), count: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ op: fc.constant("io" as const), turns: fc.integer({ min: 1, max: 30 }) })
)

const apply = (store: TrustStore, s: Step): Effect.Effect<unknown> => {
  switch (s.op) {
    case "request":
      return store.receiveRequest({
        node_id: s.peer,
        public_key: keyOf(s.peer),
        registryBound: s.bound,
        ...(s.network === undefined ? {} : { sharedNetwork: s.network })
      })
    case "approve":
      return Effect.ignore(store.approve(s.peer))
    case "reject":
      return Effect.ignore(store.reject(s.peer))
    case "revoke":
      return Effect.ignore(store.revoke(s.peer))
    case "outgoing":
      return store.recordOutgoing(s.peer)
    case "accept":
      return store.receiveAccept(s.peer, keyOf(s.peer))
    case "peerReject":
      return store.receiveReject(s.peer)
    case "peerRevoke":
      return store.receiveRevoke(s.peer)
    case "advance":
      return TestClock.adjust(s.millis)
    case "fail":
      return Effect.void
    case "io":
      return Effect.repeat(ioTurn, { times: s.turns - 1 })
  }
}

describe("trust store persistence property", () => {
  it("for any mutations, time and disk faults, the file after shutdown holds the state at shutdown", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(step, { maxLength: 40 }),
        fc.boolean(),
        fc.boolean(),
        (steps, debounced, diskHealedBeforeShutdown) => {
          const logs = makeLogCapture()
          const faults: DiskFaults = { remaining: 0, triggered: 0 }
          return Effect.gen(function*() {
            const { fs, dir, file } = yield* tempDir
            const scope = yield* Scope.make()
            const store = yield* makeTrustStore({
              directory: dir,
              policy,
              ...(debounced ? { saveDebounce: "200 millis" } : {})
            }).pipe(Scope.provide(scope))
            for (const s of steps) {
              if (s.op === "fail") faults.remaining = s.count
              yield* apply(store, s)
            }
            if (diskHealedBeforeShutdown) faults.remaining = 0
            const atShutdown = yield* store.state
            yield* Scope.close(scope, Exit.void) // possibly while a save is in flight or retrying
            const now = yield* Clock.currentTimeMillis
            const expected = encodeTrustFile(atShutdown, now)
            const onDisk = yield* fileAsEncoded(fs, file, now)
            if (diskHealedBeforeShutdown) assert.strictEqual(onDisk, expected)
            else if (onDisk !== expected) assert.include(logs.at("Error").at(-1)?.text, "final save failed")
            // Every failed write is reported; only a write cut short by the shutdown itself may go unlogged.
            const reported = logs.at("Warn").filter((w) => w.text.includes("injected fault")).length
            assert.isAtMost(reported, faults.triggered)
            assert.isAtLeast(reported, faults.triggered - 1)
          }).pipe(
            Effect.scoped,
            Effect.provide([faultyFileSystem(faults), logs.layer]),
            Effect.provide([localFileSystem, TestClock.layer()]),
            Effect.runPromise
          )
        }
      ),
      { numRuns: 100 }
    )
  }, 120_000)
})

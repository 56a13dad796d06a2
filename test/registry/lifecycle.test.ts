/**
 * The registry's end state after it stops: nothing left running or open, state on disk complete, and a
 * request already being handled when shutdown starts still gets its answer.
 */
import { localFileSystem } from "../../src/platform/file-system.ts"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Layer, Metric, Schedule, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Identity } from "../../src/crypto/identity.ts"
import { layerEmbeddedStore } from "../../src/registry/embedded-store.ts"
import { requestsTotal } from "../../src/registry/metrics.ts"
import { layerRedisStore } from "../../src/registry/redis-store.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { uniqueKeyPrefix, useRedisServer } from "../support/redis-server.ts"
import { registerRequest, startRegistry } from "../support/registry.ts"

describe("registry lifecycle", () => {
  const redis = useRedisServer()

  it.live("a registry with a snapshot store stops with no fiber or handle left and its state on disk", () =>
    Effect.gen(function*() {
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "pilotfish-reg-life-")), "registry.json")
      const alice = Identity.generate()
      yield* expectNoLeaks(Effect.gen(function*() {
        const { client } = yield* startRegistry({}, layerEmbeddedStore({ path: file }).pipe(Layer.provide(localFileSystem)))
        const c = yield* client()
        yield* c.call(registerRequest(alice, ":4000", { hostname: "alice" }))
      }))
      const saved = fs.readFileSync(file, "utf8")
      assert.include(saved, alice.publicKeyBase64)
      assert.include(saved, "\"hostname\":\"alice\"")
    }))

  it.live("a request in flight when shutdown starts is answered, then everything closes", () =>
    expectNoLeaks(Effect.gen(function*() {
      const server = redis.server()
      const scope = yield* Scope.make()
      const store = layerRedisStore({ url: server.url, keyPrefix: uniqueKeyPrefix() })
      const { client } = yield* startRegistry({ drainTimeout: "10 seconds" }, store).pipe(Scope.provide(scope))
      const c = yield* client()
      const id = (yield* c.call(registerRequest(Identity.generate(), ":4000")))["node_id"] as number

      yield* server.suspend // the store now hangs: the next request stays in flight
      const lookups = Metric.withAttributes(requestsTotal, { type: "lookup" })
      const inFlight = yield* Effect.forkChild(c.call({ type: "lookup", node_id: id }))
      yield* Metric.value(lookups).pipe(
        Effect.repeat({ until: (state) => state.count === 1, schedule: Schedule.spaced("5 millis") }),
        Effect.timeout("5 seconds")
      )
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* server.resume
      const reply = yield* Fiber.join(inFlight)
      assert.strictEqual(reply["type"], "lookup_ok")
      yield* Fiber.join(closing)
      // Closed: a new request finds no registry.
      const after = yield* c.call({ type: "lookup", node_id: id }).pipe(Effect.flip)
      assert.strictEqual(after._tag, "RegistryUnavailable")
    })))
})

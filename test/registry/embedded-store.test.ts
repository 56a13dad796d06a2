import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { layerEmbeddedStore } from "../../src/registry/embedded-store.ts"
import { RegistryStore } from "../../src/registry/store.ts"
import { storeContract } from "./store-contract.ts"

storeContract("embedded, in memory", () => layerEmbeddedStore().pipe(Layer.provide(NodeServices.layer)))

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "pilotfish-registry-"))
const key = (n: number) => Buffer.alloc(32, n).toString("base64")

/** Builds the store in its own scope, so a test can stop it (final snapshot) and start it again. */
const openStore = (file: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(layerEmbeddedStore({ path: file }).pipe(Layer.provide(NodeServices.layer)), scope)
    return { store: Context.get(context, RegistryStore), close: Scope.close(scope, Exit.void) }
  })

describe("embedded store persistence", () => {
  it.live("a restart restores nodes, hostnames, trust pairs and inboxes", () =>
    Effect.gen(function*() {
      const file = path.join(tempDir(), "state", "registry.json")
      const now = Date.now()
      const first = yield* openStore(file)
      const a = yield* first.store.register({ publicKey: key(1), realAddr: "192.0.2.1:4000", hostname: "alpha", relayOnly: false, nowMs: now })
      const b = yield* first.store.register({ publicKey: key(2), realAddr: "192.0.2.2:4000", relayOnly: false, nowMs: now })
      assert(a._tag === "Registered" && b._tag === "Registered")
      yield* first.store.reportTrust(a.lease.nodeId, b.lease.nodeId)
      yield* first.store.reportTrust(b.lease.nodeId, a.lease.nodeId)
      yield* first.store.pushInbox(b.lease.nodeId, { kind: "request", fromNodeId: a.lease.nodeId, justification: "hi", signature: "c2ln" })
      yield* first.store.setTags(a.lease.nodeId, ["gpu"], now)
      yield* first.close // before the 1 s debounce: the final save must carry everything

      const second = yield* openStore(file)
      assert.strictEqual(yield* second.store.resolveHostname("alpha", now), a.lease.nodeId)
      assert.deepStrictEqual((yield* second.store.lease(a.lease.nodeId, now))?.tags, ["gpu"])
      assert.isTrue(yield* second.store.hasTrust(a.lease.nodeId, b.lease.nodeId))
      assert.strictEqual((yield* second.store.drainInbox(b.lease.nodeId)).requests.length, 1)
      const again = yield* second.store.register({ publicKey: key(2), realAddr: "192.0.2.2:4000", relayOnly: false, nowMs: now })
      assert(again._tag === "Registered")
      assert.strictEqual(again.lease.nodeId, b.lease.nodeId)
      const c = yield* second.store.register({ publicKey: key(3), realAddr: "192.0.2.3:4000", relayOnly: false, nowMs: now })
      assert(c._tag === "Registered")
      assert.strictEqual(c.lease.nodeId, b.lease.nodeId + 1) // the ID counter was restored too
      yield* second.close
    }))

  it.live("an unreadable snapshot is refused with a hint and left untouched", () =>
    Effect.gen(function*() {
      const file = path.join(tempDir(), "registry.json")
      fs.writeFileSync(file, "{\"format\":\"pilotfish-registry-snapshot/1\",\"nextNodeId\":")
      const before = fs.readFileSync(file)
      const error = yield* openStore(file).pipe(Effect.flip)
      assert(error._tag === "SnapshotUnreadable", `expected SnapshotUnreadable, got ${error._tag}`)
      assert.include(error.hint, "move")
      assert.deepStrictEqual(fs.readFileSync(file), before)
    }))
})

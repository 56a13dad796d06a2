/**
 * A whole network end to end, as operators run it: `pilot-rendezvous` (registry with its embedded store, and a
 * beacon) and three `pilot-daemon` processes (alpha, bravo, charlie; private, each with its own identity, data
 * directory and IPC socket), every one a child process on real loopback sockets, driven only through `pilotctl`.
 *
 * One story, because each step builds on the trust of the ones before: hostnames; a mutual handshake (both ask)
 * that approves itself; a one-sided one that waits in `pending` until `approve`; messages, a 5 MiB file and
 * pub/sub between the trusted nodes; `reject` and `untrust`; SIGTERM to everything (exit 0 within each
 * binary's deadline, sockets gone, no live registry entry, trust.json and inbox on disk); and a restart on the
 * same files: same node IDs, trust intact, messages flowing again.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { createHash, randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { formatAddr } from "../../src/protocol/address.ts"
import { assertErrorEnvelope, ctl, okData, tempDir } from "../pilotctl/ctl-kit.ts"
import {
  ctlOk,
  DAEMON_DEADLINE,
  type NetworkDaemon,
  pendingAt,
  RENDEZVOUS_DEADLINE,
  startNetworkDaemon,
  startRendezvous,
  stopCleanly,
  trustedBy,
  until
} from "./e2e-kit.ts"

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

const sameIds = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => a.length === b.length && a.every((x, i) => x === b[i])

const sorted = (...ids: ReadonlyArray<number>) => [...ids].sort()

const trustFile = (daemon: NetworkDaemon) =>
  JSON.parse(fs.readFileSync(path.join(daemon.home, "trust.json"), "utf8")) as { readonly trusted: ReadonlyArray<{ readonly node_id: number }> }

describe("a network of child processes driven by pilotctl", () => {
  it.live("trust (mutual, pending → approve, reject, untrust), messages, a 5 MiB file, pub/sub, clean shutdown and restart", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const store = path.join(dir, "registry.json")
      const rendezvous = yield* startRendezvous(store)
      const [alpha, bravo, charlie] = yield* Effect.all([
        startNetworkDaemon(dir, "alpha", rendezvous),
        startNetworkDaemon(dir, "bravo", rendezvous),
        startNetworkDaemon(dir, "charlie", rendezvous)
      ], { concurrency: "unbounded" })
      const registryCtl = (...args: ReadonlyArray<string>) => ctl(...args, "--json", "--registry", rendezvous.registry)

      // ---- hostnames set and found ------------------------------------------------------------------------
      for (const daemon of [alpha, bravo, charlie]) {
        assert.strictEqual((yield* ctlOk(daemon, "info"))["hostname"], daemon.name)
        const found = yield* ctlOk(alpha, "find", daemon.name)
        assert.strictEqual(found["node_id"], daemon.nodeId)
        assert.strictEqual(found["address"], formatAddr({ network: 0, node: daemon.nodeId }))
        assert.strictEqual(okData(yield* registryCtl("lookup", String(daemon.nodeId)))["hostname"], daemon.name)
      }

      // ---- mutual handshake: both ask, nobody approves by hand ---------------------------------------------
      assert.strictEqual((yield* ctlOk(alpha, "handshake", "bravo", "alpha asks"))["node_id"], bravo.nodeId)
      assert.strictEqual((yield* ctlOk(bravo, "handshake", String(alpha.nodeId), "bravo asks"))["node_id"], alpha.nodeId)
      yield* until("alpha and bravo trust each other", Effect.map(
        Effect.all([trustedBy(alpha), trustedBy(bravo)]),
        ([a, b]) => sameIds(a, [bravo.nodeId]) && sameIds(b, [alpha.nodeId])
      ))
      assert.deepStrictEqual(yield* pendingAt(alpha), [])
      assert.deepStrictEqual(yield* pendingAt(bravo), [])

      // ---- one-sided: waits in pending until approve -------------------------------------------------------
      yield* ctlOk(charlie, "handshake", "alpha", "charlie asks")
      yield* until("charlie's request pending at alpha", Effect.map(pendingAt(alpha), (p) => sameIds(p, [charlie.nodeId])))
      assert.deepStrictEqual(yield* trustedBy(alpha), [bravo.nodeId])
      assert.deepStrictEqual(yield* trustedBy(charlie), [])
      assert.strictEqual((yield* ctlOk(alpha, "approve", String(charlie.nodeId)))["status"], "approved")
      assert.deepStrictEqual(yield* pendingAt(alpha), [])
      assert.deepStrictEqual(yield* trustedBy(alpha), sorted(bravo.nodeId, charlie.nodeId))
      yield* until("charlie learns alpha's approval", Effect.map(trustedBy(charlie), (t) => sameIds(t, [alpha.nodeId])))

      // ---- send-message --wait returns the ACK -----------------------------------------------------------------
      const sent = yield* ctlOk(alpha, "send-message", "bravo", "--data", "hello bravo", "--wait")
      assert.deepStrictEqual(sent, { target: formatAddr({ network: 0, node: bravo.nodeId }), type: "text", bytes: 11, ack: "ACK TEXT 11 bytes" })
      const inbox = yield* ctlOk(bravo, "inbox")
      assert.deepStrictEqual((inbox["messages"] as ReadonlyArray<Record<string, unknown>>).map((m) => [m["from"], m["data"]]), [
        [formatAddr({ network: 0, node: alpha.nodeId }), "hello bravo"]
      ])

      // ---- a 5 MiB file arrives intact ---------------------------------------------------------------------
      const file = path.join(dir, "payload.bin")
      const content = randomBytes(5 * 1024 * 1024)
      fs.writeFileSync(file, content)
      const sentFile = yield* ctlOk(bravo, "send-file", "alpha", file, "--timeout", "120s")
      assert.strictEqual(sentFile["ack"], `ACK FILE ${content.byteLength} bytes`)
      const received = (yield* ctlOk(alpha, "received"))["files"] as ReadonlyArray<Record<string, unknown>>
      assert.strictEqual(received.length, 1)
      assert.strictEqual(received[0]!["bytes"], content.byteLength)
      assert.strictEqual(sha256(fs.readFileSync(received[0]!["path"] as string)), sha256(content))

      // ---- pub/sub: two subscribers (bravo, charlie) on alpha's event stream, bravo publishes ---------------
      const subscribe = (daemon: NetworkDaemon) =>
        Effect.forkChild(ctl("subscribe", "alpha", "news", "--count", "1", "--timeout", "60s", "--json", "--socket", daemon.socket))
      const subscribers = [yield* subscribe(bravo), yield* subscribe(charlie)]
      // A subscription races the first publications: publish until both subscribers have their event.
      yield* until("both subscribers got an event", Effect.andThen(
        ctlOk(bravo, "publish", "alpha", "news", "--data", "breaking"),
        Effect.sync(() => subscribers.every((s) => s.pollUnsafe() !== undefined))
      ))
      for (const subscriber of subscribers) {
        const got = okData(yield* Fiber.join(subscriber))
        assert.deepStrictEqual(got["events"], [{ topic: "news", data: "breaking", bytes: 8 }])
      }

      // ---- reject -------------------------------------------------------------------------------------------
      yield* ctlOk(bravo, "handshake", "charlie", "bravo asks charlie")
      yield* until("bravo's request pending at charlie", Effect.map(pendingAt(charlie), (p) => sameIds(p, [bravo.nodeId])))
      assert.strictEqual((yield* ctlOk(charlie, "reject", String(bravo.nodeId), "no thanks"))["status"], "rejected")
      assert.deepStrictEqual(yield* pendingAt(charlie), [])
      assert.deepStrictEqual(yield* trustedBy(charlie), [alpha.nodeId])
      assert.deepStrictEqual(yield* trustedBy(bravo), [alpha.nodeId])
      assertErrorEnvelope(yield* ctl("approve", String(bravo.nodeId), "--json", "--socket", charlie.socket), "not_found")

      // ---- untrust ------------------------------------------------------------------------------------------
      assert.strictEqual((yield* ctlOk(alpha, "untrust", String(charlie.nodeId)))["status"], "revoked")
      assert.deepStrictEqual(yield* trustedBy(alpha), [bravo.nodeId])
      yield* until("charlie learns the revoke", Effect.map(trustedBy(charlie), (t) => t.length === 0))

      // ---- SIGTERM to every process ---------------------------------------------------------------------------
      for (const daemon of [charlie, bravo, alpha]) {
        yield* stopCleanly(daemon.proc, DAEMON_DEADLINE, daemon.socket)
        assertErrorEnvelope(yield* registryCtl("lookup", String(daemon.nodeId)), "not_found")
      }
      yield* stopCleanly(rendezvous.proc, RENDEZVOUS_DEADLINE)
      assert.isTrue(fs.existsSync(store), "the registry's snapshot is on disk")
      assert.deepStrictEqual(trustFile(alpha).trusted.map((t) => t.node_id), [bravo.nodeId])
      assert.deepStrictEqual(trustFile(bravo).trusted.map((t) => t.node_id), [alpha.nodeId])
      assert.deepStrictEqual(trustFile(charlie).trusted, [])
      assert.strictEqual(fs.readdirSync(path.join(bravo.home, "inbox")).length, 1)

      // ---- restart on the same files: same node IDs, trust intact, messages flow ------------------------------
      const again = yield* startRendezvous(store, { registry: rendezvous.registryPort, beacon: rendezvous.beaconPort })
      const [alpha2, bravo2] = yield* Effect.all([
        startNetworkDaemon(dir, "alpha", again),
        startNetworkDaemon(dir, "bravo", again)
      ], { concurrency: "unbounded" })
      assert.strictEqual(alpha2.nodeId, alpha.nodeId)
      assert.strictEqual(bravo2.nodeId, bravo.nodeId)
      assert.deepStrictEqual(yield* trustedBy(alpha2), [bravo.nodeId])
      assert.deepStrictEqual(yield* trustedBy(bravo2), [alpha.nodeId])
      const again1 = yield* ctlOk(alpha2, "send-message", "bravo", "--data", "hello again", "--wait")
      assert.strictEqual(again1["ack"], "ACK TEXT 11 bytes")
      const again2 = yield* ctlOk(bravo2, "send-message", "alpha", "--data", "welcome back", "--wait")
      assert.strictEqual(again2["ack"], "ACK TEXT 12 bytes")
      const inbox2 = (yield* ctlOk(bravo2, "inbox"))["messages"] as ReadonlyArray<Record<string, unknown>>
      assert.deepStrictEqual(inbox2.map((m) => m["data"]).sort(), ["hello again", "hello bravo"])

      for (const daemon of [alpha2, bravo2]) yield* stopCleanly(daemon.proc, DAEMON_DEADLINE, daemon.socket)
      yield* stopCleanly(again.proc, RENDEZVOUS_DEADLINE)
    }), 300_000)
})

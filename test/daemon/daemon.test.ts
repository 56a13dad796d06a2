/**
 * `pilot-daemon` as operators run it: a child process that binds and serves IPC before (and without) a registry,
 * registers once one appears, answers Health and Info over its IPC socket, and on SIGTERM exits 0 with its socket
 * file removed and its registry entry retracted.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import type { IpcMessage } from "../../src/protocol/ipc.ts"
import { spawnDaemon } from "../support/daemon-child.ts"
import { startRegistry } from "../support/registry.ts"
import { connectClient } from "../ipc/ipc-test-kit.ts"

const ACCEPTING = /message="pilot-daemon accepting" udp=127\.0\.0\.1:(\d+)/
const REGISTERED = /registered as node (\d+)/

/** A loopback TCP port that was free a moment ago (the registry is started on it after the daemon). */
const reservePort = Effect.callback<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "pf-d-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const startDaemon = (dir: string, registryPort: number, name: string, args: ReadonlyArray<string> = []) =>
  Effect.gen(function*() {
    const { proc, socket } = yield* spawnDaemon({ home: path.join(dir, name), registry: `127.0.0.1:${registryPort}`, hostname: name, args })
    yield* proc.waitForLine(ACCEPTING)
    const ipc = yield* connectClient(socket)
    return { proc, socket, ipc }
  })

const json = (reply: IpcMessage, cmd: "HealthOK" | "InfoOK"): Record<string, unknown> => {
  assert.strictEqual(reply.cmd, cmd)
  return (reply as { readonly json: Record<string, unknown> }).json
}

describe("pilot-daemon binary", () => {
  it.live("accepts before a registry exists, registers once one appears, and stops cleanly on SIGTERM", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const registryPort = yield* reservePort
      const daemon = yield* startDaemon(dir, registryPort, "alpha")

      const before = json(yield* daemon.ipc.roundTrip({ cmd: "Health" }), "HealthOK")
      assert.strictEqual(before["status"], "ok")
      assert.strictEqual(before["accepting"], true)
      assert.strictEqual(before["registered"], false)
      const unimplemented = yield* daemon.ipc.roundTrip({ cmd: "Bind", port: 1000 })
      assert.strictEqual(unimplemented.cmd, "Error")

      const registry = yield* startRegistry({ port: registryPort })
      const nodeId = Number((yield* daemon.proc.waitForLine(REGISTERED, "30 seconds"))[1])
      yield* daemon.proc.waitForLine(/message="data plane running"/)
      const acceptingAt = daemon.proc.lines.findIndex((l) => ACCEPTING.test(l))
      const registeredAt = daemon.proc.lines.findIndex((l) => REGISTERED.test(l))
      assert.isTrue(acceptingAt >= 0 && acceptingAt < registeredAt, "accepting is logged before registered")

      const after = json(yield* daemon.ipc.roundTrip({ cmd: "Health" }), "HealthOK")
      assert.strictEqual(after["registered"], true)
      const info = json(yield* daemon.ipc.roundTrip({ cmd: "Info" }), "InfoOK")
      assert.strictEqual(info["node_id"], nodeId)
      assert.strictEqual(info["hostname"], "alpha")
      assert.deepStrictEqual(info["peer_list"], [])
      assert.deepStrictEqual(info["conn_list"], [])

      const client = yield* registry.client()
      const lookup = yield* client.call({ type: "lookup", node_id: nodeId })
      assert.strictEqual(lookup["hostname"], "alpha")

      assert.strictEqual(yield* daemon.proc.stop("SIGTERM"), 0)
      assert.isFalse(fs.existsSync(daemon.socket), "the IPC socket file is removed")
      const gone = yield* Effect.flip(client.call({ type: "lookup", node_id: nodeId }))
      assert.strictEqual(gone._tag === "RegistryRejected" ? gone.code : gone._tag, "node_not_found", "the entry was retracted")
    }), 60_000)

  it.live("--public makes the node public once registered, and --trust-auto-approve approves a request at once", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const { port, client } = yield* startRegistry()
      const open = yield* startDaemon(dir, port, "open", ["--public", "--trust-auto-approve"])
      const asker = yield* startDaemon(dir, port, "asker", ["--public"])
      const openId = Number((yield* open.proc.waitForLine(REGISTERED, "30 seconds"))[1])
      const askerId = Number((yield* asker.proc.waitForLine(REGISTERED, "30 seconds"))[1])
      yield* open.proc.waitForLine(/message="node is public"/)
      yield* asker.proc.waitForLine(/message="data plane running"/)
      yield* open.proc.waitForLine(/message="data plane running"/)
      const lookup = yield* (yield* client()).call({ type: "lookup", node_id: openId })
      assert.isTrue(lookup["public"] as boolean)
      assert.property(lookup, "real_addr")

      const sent = yield* asker.ipc.roundTrip({ cmd: "Handshake", sub: "Send", node: openId, justification: "hello" })
      assert.strictEqual(sent.cmd, "HandshakeOK")
      const waited = yield* asker.ipc.roundTrip({ cmd: "Handshake", sub: "Wait", node: openId, timeoutMs: 20_000 })
      assert.deepInclude((waited as { readonly json: Record<string, unknown> }).json, { node_id: openId, trusted: true })
      const openHealth = json(yield* open.ipc.roundTrip({ cmd: "Health" }), "HealthOK")
      assert.strictEqual(openHealth["handshake_pending_count"], 0) // approved, not left pending
      assert.notStrictEqual(askerId, openId)
      assert.strictEqual(yield* open.proc.stop(), 0)
      assert.strictEqual(yield* asker.proc.stop(), 0)
    }), 90_000)
})

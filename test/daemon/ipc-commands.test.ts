/**
 * The daemon's IPC commands end to end: two `pilot-daemon` child processes registered to one registry, driven
 * over their real Unix sockets — streams through the encrypted tunnel, registry-backed commands, and the trust
 * handshake. Every test ends with SIGTERM: exit 0 and the socket file removed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Schedule, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { IpcMessage } from "../../src/protocol/ipc.ts"
import { startDaemon as startDaemonChild } from "../support/daemon-child.ts"
import { startRegistry } from "../support/registry.ts"
import { connectClient } from "../ipc/ipc-test-kit.ts"

const ACCEPTING = /message="pilot-daemon accepting"/

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "pf-ic-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

type Client = Effect.Success<ReturnType<typeof connectClient>>

/** A daemon with an identity directory of its own (trust.json lives there), registered, data plane running. */
const startDaemon = (dir: string, registryPort: number, name: string) =>
  Effect.gen(function*() {
    const { proc, socket, nodeId } = yield* startDaemonChild({ home: path.join(dir, name), registry: `127.0.0.1:${registryPort}`, hostname: name })
    yield* proc.waitForLine(ACCEPTING)
    const ipc = yield* connectClient(socket)
    return { proc, socket, ipc, nodeId, addr: { network: 0, node: nodeId } }
  })

type Daemon = Effect.Success<ReturnType<typeof startDaemon>>

const twoDaemons = Effect.gen(function*() {
  const dir = yield* tempDir
  const registry = yield* startRegistry()
  const a = yield* startDaemon(dir, registry.port, "alpha")
  const b = yield* startDaemon(dir, registry.port, "bravo")
  return { a, b }
})

const stopCleanly = (daemon: Daemon) =>
  Effect.gen(function*() {
    assert.strictEqual(yield* daemon.proc.stop("SIGTERM"), 0)
    assert.isFalse(fs.existsSync(daemon.socket), "the IPC socket file is removed")
  })

const expect = <K extends IpcMessage["cmd"]>(reply: IpcMessage, cmd: K): Extract<IpcMessage, { readonly cmd: K }> => {
  assert.strictEqual(reply.cmd, cmd, reply.cmd === "Error" ? reply.message : undefined)
  return reply as Extract<IpcMessage, { readonly cmd: K }>
}

const jsonOf = (reply: IpcMessage): Record<string, unknown> => {
  assert.isTrue("json" in reply, `${reply.cmd} carries JSON`)
  return (reply as { readonly json: Record<string, unknown> }).json
}

const makePublic = (ipc: Client) =>
  Effect.gen(function*() {
    const reply = jsonOf(expect(yield* ipc.roundTrip({ cmd: "SetVisibility", public: true }), "SetVisibilityOK"))
    assert.strictEqual(reply["visibility"], "public")
  })

const text = (s: string) => new TextEncoder().encode(s)
const decoded = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

/** Repeats a status query until `done` holds (the peer processes a handshake asynchronously), bounded. */
const until = <A>(query: Effect.Effect<A, unknown>, done: (value: A) => boolean) =>
  query.pipe(
    Effect.repeat({ until: done, schedule: Schedule.spaced("100 millis") }),
    Effect.timeout("10 seconds")
  )

describe("daemon IPC commands", () => {
  it.live("streams between two daemons: Bind, Dial, Send/Recv both ways, Close, close on client disconnect, SendTo", () =>
    Effect.gen(function*() {
      const { a, b } = yield* twoDaemons
      yield* makePublic(a.ipc)
      yield* makePublic(b.ipc)

      expect(yield* b.ipc.roundTrip({ cmd: "Bind", port: 1000 }), "BindOK")
      const dialed = expect(yield* a.ipc.roundTrip({ cmd: "Dial", addr: b.addr, port: 1000 }), "DialOK")
      const accepted = expect(yield* b.ipc.next, "Accept")
      assert.strictEqual(accepted.localPort, 1000)
      assert.deepStrictEqual(accepted.remoteAddr, a.addr)

      yield* a.ipc.request({ cmd: "Send", connId: dialed.connId, data: text("hello") })
      const atB = expect(yield* b.ipc.next, "Recv")
      assert.strictEqual(atB.connId, accepted.connId)
      assert.strictEqual(decoded(atB.data), "hello")
      yield* b.ipc.request({ cmd: "Send", connId: accepted.connId, data: text("world") })
      const atA = expect(yield* a.ipc.next, "Recv")
      assert.strictEqual(atA.connId, dialed.connId)
      assert.strictEqual(decoded(atA.data), "world")

      // Close: answered with CloseOK, and the peer's driver is told with a pushed CloseOK.
      assert.strictEqual(expect(yield* a.ipc.roundTrip({ cmd: "Close", connId: dialed.connId }), "CloseOK").connId, dialed.connId)
      assert.strictEqual(expect(yield* b.ipc.next, "CloseOK").connId, accepted.connId)
      const again = yield* a.ipc.roundTrip({ cmd: "Close", connId: dialed.connId })
      assert.match(expect(again, "Error").message, /^not_found: /)

      // A driver that disconnects has its connections closed: the peer's driver sees CloseOK.
      const scope = yield* Scope.make()
      const transient = yield* connectClient(a.socket).pipe(Scope.provide(scope))
      expect(yield* transient.roundTrip({ cmd: "Dial", addr: b.addr, port: 1000 }), "DialOK")
      const second = expect(yield* b.ipc.next, "Accept")
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(expect(yield* b.ipc.next, "CloseOK").connId, second.connId)

      // A bound port also receives datagrams.
      yield* a.ipc.request({ cmd: "SendTo", addr: b.addr, port: 1000, data: text("dgram") })
      const datagram = expect(yield* b.ipc.next, "RecvFrom")
      assert.deepStrictEqual([datagram.srcAddr, datagram.dstPort, decoded(datagram.data)], [a.addr, 1000, "dgram"])

      // Unbind frees the port: a new dial to it is refused.
      expect(yield* b.ipc.roundTrip({ cmd: "Unbind", port: 1000 }), "UnbindOK")
      assert.strictEqual(expect(yield* a.ipc.roundTrip({ cmd: "Dial", addr: b.addr, port: 1000 }), "Error").cmd, "Error")

      // Unimplemented commands are answered at once, with a code.
      assert.match(expect(yield* a.ipc.roundTrip({ cmd: "RotateKey" }), "Error").message, /^not_supported: /)

      yield* stopCleanly(a)
      yield* stopCleanly(b)
    }), 90_000)

  it.live("SetHostname then ResolveHostname; SetTags is bounded", () =>
    Effect.gen(function*() {
      const { a, b } = yield* twoDaemons
      const set = jsonOf(expect(yield* a.ipc.roundTrip({ cmd: "SetHostname", hostname: "renamed" }), "SetHostnameOK"))
      assert.strictEqual(set["hostname"], "renamed")
      const resolved = jsonOf(expect(yield* b.ipc.roundTrip({ cmd: "ResolveHostname", hostname: "renamed" }), "ResolveHostnameOK"))
      assert.strictEqual(resolved["node_id"], a.nodeId)
      const missing = yield* b.ipc.roundTrip({ cmd: "ResolveHostname", hostname: "nobody" })
      assert.match(expect(missing, "Error").message, /^hostname_not_found: /)

      const tags = jsonOf(expect(yield* a.ipc.roundTrip({ cmd: "SetTags", tags: ["web", "eu"] }), "SetTagsOK"))
      assert.deepStrictEqual(tags["tags"], ["web", "eu"])
      const tooMany = yield* a.ipc.roundTrip({ cmd: "SetTags", tags: ["a", "b", "c", "d"] })
      assert.match(expect(tooMany, "Error").message, /^invalid_tags: /)

      yield* stopCleanly(a)
      yield* stopCleanly(b)
    }), 90_000)

  it.live("handshake: send, pending at the peer, approve, then both sides trust each other", () =>
    Effect.gen(function*() {
      const { a, b } = yield* twoDaemons
      yield* makePublic(a.ipc)
      yield* makePublic(b.ipc)

      const sent = jsonOf(expect(
        yield* a.ipc.roundTrip({ cmd: "Handshake", sub: "Send", node: b.nodeId, justification: "let me in" }),
        "HandshakeOK"
      ))
      assert.deepStrictEqual(sent, { status: "sent", node_id: b.nodeId })

      const pendingReply = (ipc: Client) =>
        Effect.map(ipc.roundTrip({ cmd: "Handshake", sub: "Pending" }), (r) => jsonOf(expect(r, "HandshakeOK"))["pending"] as Array<Record<string, unknown>>)
      const pending = yield* until(pendingReply(b.ipc), (list) => list.length > 0)
      assert.strictEqual(pending[0]?.["node_id"], a.nodeId)
      assert.strictEqual(pending[0]?.["justification"], "let me in")
      const health = jsonOf(expect(yield* b.ipc.roundTrip({ cmd: "Health" }), "HealthOK"))
      assert.strictEqual(health["handshake_pending_count"], 1)

      const approved = jsonOf(expect(yield* b.ipc.roundTrip({ cmd: "Handshake", sub: "Approve", node: a.nodeId }), "HandshakeOK"))
      assert.strictEqual(approved["node_id"], a.nodeId)
      const waited = jsonOf(expect(
        yield* a.ipc.roundTrip({ cmd: "Handshake", sub: "Wait", node: b.nodeId, timeoutMs: 4000 }),
        "HandshakeOK"
      ))
      assert.deepStrictEqual(waited, { node_id: b.nodeId, trusted: true })

      const trustedOf = (ipc: Client) =>
        Effect.map(ipc.roundTrip({ cmd: "Handshake", sub: "Trusted" }), (r) =>
          (jsonOf(expect(r, "HandshakeOK"))["trusted"] as Array<Record<string, unknown>>).map((t) => t["node_id"]))
      assert.deepStrictEqual(yield* trustedOf(b.ipc), [a.nodeId])
      assert.deepStrictEqual(yield* trustedOf(a.ipc), [b.nodeId])
      assert.deepStrictEqual(yield* pendingReply(b.ipc), [])

      yield* stopCleanly(a)
      yield* stopCleanly(b)
    }), 90_000)
})

/**
 * Supervision of `pilot-daemon` as a service manager sees it (DESIGN.md §4 rule 5): the failure of an
 * essential part ends the process with its documented exit code and a log line naming the cause, and the
 * shutdown that follows is the ordinary ordered one — the registry entry retracted, the socket file gone.
 * Failures of non-essential work (one IPC client) are contained: the daemon keeps serving.
 *
 * A UDP socket cannot be closed from outside a process, so that failure is injected in process, at the seam
 * the daemon builds its data plane on (a `TunnelSocket` whose reader fails on demand, as a closed socket's does).
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber } from "effect"
import { DatagramSocketClosedError, DatagramSocketError } from "effect/socket/DatagramSocket"
import * as fs from "node:fs"
import * as net from "node:net"
import { Identity } from "../../src/crypto/identity.ts"
import { makeDataPlane } from "../../src/daemon/data-plane.ts"
import { ExitCode, exitCodeOf } from "../../src/platform/exit-codes.ts"
import { bindTunnelSocket, type TunnelSocket } from "../../src/tunnel/tunnel.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { awaitPlaneRunning, spawnDaemon } from "../support/daemon-child.ts"
import { startRegistry } from "../support/registry.ts"
import { ctl, okData, tempDir } from "../pilotctl/ctl-kit.ts"

const startDaemon = (dir: string, registryPort: number, args: ReadonlyArray<string> = []) =>
  spawnDaemon({ home: dir, registry: `127.0.0.1:${registryPort}`, args })

/** A TCP port held open by this test until its scope closes. */
const occupiedPort = Effect.acquireRelease(
  Effect.callback<net.Server>((resume) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
)

describe("pilot-daemon supervision", () => {
  it.live("the IPC socket file removed under a running daemon: exit 4 with the cause logged, entry retracted", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const registry = yield* startRegistry()
      const daemon = yield* startDaemon(dir, registry.port)
      const nodeId = yield* awaitPlaneRunning(daemon.proc)

      fs.rmSync(daemon.socket)
      assert.strictEqual(yield* daemon.proc.exited, ExitCode.essentialFailed)
      assert.isTrue(
        daemon.proc.lines.some((l) => /level=ERROR/.test(l) && /ipc-server/.test(l) && /was removed/.test(l)),
        `the failure is logged with its cause:\n${daemon.proc.lines.join("\n")}`
      )
      const client = yield* registry.client()
      const gone = yield* Effect.flip(client.call({ type: "lookup", node_id: nodeId }))
      assert.strictEqual(gone._tag === "RegistryRejected" ? gone.code : gone._tag, "node_not_found", "the entry was retracted")
      assert.deepStrictEqual(fs.readdirSync(dir).filter((f) => f.startsWith(".ipc-")), [], "no staging directory left")
    }), 60_000)

  it.live("the health port cannot be bound: exit 3 at startup, with a message, and no socket file left behind", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const registry = yield* startRegistry()
      const taken = yield* occupiedPort
      const port = (taken.address() as net.AddressInfo).port
      const daemon = yield* startDaemon(dir, registry.port, ["--http", `127.0.0.1:${port}`])
      assert.strictEqual(yield* daemon.proc.exited, ExitCode.startup)
      assert.isTrue(daemon.proc.lines.some((l) => /level=ERROR/.test(l) && /EADDRINUSE|address already in use/i.test(l)), daemon.proc.lines.join("\n"))
      assert.isFalse(fs.existsSync(daemon.socket), "the IPC socket file is removed")
    }), 60_000)

  it.live("one misbehaving IPC client is contained: garbage on one connection, the daemon keeps serving others", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const registry = yield* startRegistry()
      const daemon = yield* startDaemon(dir, registry.port)
      yield* awaitPlaneRunning(daemon.proc)

      // A frame header announcing 4 GiB, then garbage: that client is dropped, nobody else notices.
      yield* Effect.callback<void>((resume) => {
        const bad = net.createConnection({ path: daemon.socket }, () => bad.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])))
        bad.on("close", () => resume(Effect.void))
        bad.on("error", () => undefined)
        bad.resume()
      })
      const health = okData(yield* ctl("health", "--json", "--socket", daemon.socket))
      assert.strictEqual(health["status"], "ok")
      assert.strictEqual(yield* daemon.proc.stop("SIGTERM"), ExitCode.ok)
    }), 60_000)

  it.effect("the UDP socket fails under the data plane: its supervisor ends with the socket's error, exit code 4", () =>
    expectNoLeaks(Effect.gen(function*() {
      const closed = yield* Deferred.make<never, DatagramSocketError>()
      const real = yield* bindTunnelSocket({ host: "127.0.0.1", port: 0 })
      const failing: TunnelSocket = {
        address: real.address,
        attach: (onDatagram) => {
          const udp = real.attach(onDatagram)
          return { ...udp, reader: Effect.raceFirst(udp.reader, Deferred.await(closed)) }
        }
      }
      const plane = yield* makeDataPlane({
        identity: Identity.generate(),
        nodeId: 1,
        bind: failing,
        registryKey: () => Effect.succeed(undefined),
        endpointOf: () => Effect.succeed(undefined)
      })
      const watching = yield* Effect.forkChild(plane.failure)
      yield* Deferred.fail(closed, new DatagramSocketError({ reason: new DatagramSocketClosedError() }))
      const exit = yield* Fiber.await(watching)
      assert.isTrue(Exit.isFailure(exit))
      const failure = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      assert.include(String((failure as { readonly message?: string } | undefined)?.message), "tunnel-udp-reader")
      assert.strictEqual(exitCodeOf(exit), ExitCode.essentialFailed)
    })), 30_000)
})

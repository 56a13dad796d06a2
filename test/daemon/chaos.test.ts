/**
 * Chaos: a daemon killed with SIGKILL in the middle of a transfer, restarted on the same identity, data directory,
 * socket path and UDP port (as a supervised unit restarts), must come back whole — the stale socket file is replaced, the identity and trust files are intact
 * (written atomically, so a kill cannot tear them), no temp file is left behind — and its peer must re-key and
 * carry the next transfer within a bounded wait. Real binaries as child processes, a registry in-process.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Schedule } from "effect"
import * as dgram from "node:dgram"
import * as fs from "node:fs"
import * as path from "node:path"
import type { IpcMessage } from "../../src/protocol/ipc.ts"
import { decodeTrustFile } from "../../src/trust/trust-file.ts"
import { connectClient } from "../ipc/ipc-test-kit.ts"
import { ctl, okData, startCtlDaemon, tempDir } from "../pilotctl/ctl-kit.ts"
import { startRegistry } from "../support/registry.ts"

/** A loopback UDP port that was free a moment ago: the restarted daemon binds the same one, as a supervised unit would. */
const freeUdpPort = Effect.callback<number>((resume) => {
  const socket = dgram.createSocket("udp4")
  socket.bind(0, "127.0.0.1", () => {
    const port = socket.address().port
    socket.close(() => resume(Effect.succeed(port)))
  })
})

const infoOf = (reply: IpcMessage): Record<string, unknown> => {
  assert.strictEqual(reply.cmd, "InfoOK")
  return (reply as { readonly json: Record<string, unknown> }).json
}

interface ConnRow {
  readonly remote_addr: string
  readonly remote_port: number
  readonly bytes_sent: number
}

/** Leftovers a crash could leave: atomic-write temp files and IPC staging directories. */
const strays = (dir: string) => fs.readdirSync(dir).filter((name) => name.endsWith(".tmp") || name.startsWith(".ipc-"))

describe("chaos: SIGKILL mid-transfer", () => {
  const restartedOn = { same: "the same UDP port", other: "another UDP port (the peer's session points at a dead endpoint)" } as const
  for (const port of ["same", "other"] as const) it.live(`the killed daemon restarts on the same identity and socket and ${restartedOn[port]}; the peer's next transfer succeeds`, () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const registry = yield* startRegistry()
      const a = yield* startCtlDaemon(dir, registry.port, "alpha")
      const bravoHome = path.join(dir, "bravo")
      const bravoUdp = yield* freeUdpPort
      const bravoListen = `127.0.0.1:${bravoUdp}`
      const b = yield* startCtlDaemon(dir, registry.port, "bravo", ["--trust-auto-approve"], bravoListen)

      // Give bravo some trust state to lose: alpha asks, bravo approves at once and saves trust.json.
      const aIpc = yield* connectClient(a.socket)
      const sent = yield* aIpc.roundTrip({ cmd: "Handshake", sub: "Send", node: b.nodeId, justification: "chaos" })
      assert.strictEqual(sent.cmd, "HandshakeOK")
      const waited = yield* aIpc.roundTrip({ cmd: "Handshake", sub: "Wait", node: b.nodeId, timeoutMs: 20_000 })
      assert.deepInclude((waited as { readonly json: Record<string, unknown> }).json, { node_id: b.nodeId, trusted: true })
      const trustPath = path.join(bravoHome, "trust.json")
      const identityPath = path.join(bravoHome, "identity.json")
      // The trust store saves from a debounced saver: poll (bounded) until the file holds alpha.
      const trustBefore = yield* Effect.try(() => fs.readFileSync(trustPath, "utf8")).pipe(
        Effect.filterOrFail((text) => text.includes(`"node_id":${a.nodeId}`) || text.includes(`"node_id": ${a.nodeId}`)),
        Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 100 })
      )
      const identityBefore = fs.readFileSync(identityPath, "utf8")

      // A long transfer to bravo's echo service; kill bravo once alpha has demonstrably sent part of it.
      const transfer = yield* Effect.forkChild(ctl("bench", String(b.nodeId), "200", "--timeout", "60s", "--json", "--socket", a.socket))
      const underWay = yield* aIpc.roundTrip({ cmd: "Info" }).pipe(
        Effect.map((reply) => (infoOf(reply)["conn_list"] as ReadonlyArray<ConnRow>).find((c) => c.remote_port === 7 && c.bytes_sent >= 512 * 1024)),
        Effect.repeat({ until: (row) => row !== undefined, schedule: Schedule.spaced("50 millis"), times: 600 })
      )
      assert.isDefined(underWay, "the transfer got under way")
      expect(yield* b.proc.stop("SIGKILL")).toBeNull()
      assert.isTrue(fs.existsSync(b.socket), "SIGKILL leaves the socket file behind")

      // Restarted on the same identity, data directory and socket path.
      const b2 = yield* startCtlDaemon(dir, registry.port, "bravo", ["--trust-auto-approve"], port === "same" ? bravoListen : undefined)
      expect(b2.nodeId).toBe(b.nodeId)
      const bIpc = yield* connectClient(b2.socket)
      const health = (yield* bIpc.roundTrip({ cmd: "Health" })) as { readonly cmd: string; readonly json: Record<string, unknown> }
      expect([health.cmd, health.json["accepting"]]).toEqual(["HealthOK", true])

      // The interrupted transfer fails (bravo's new incarnation knows neither the session nor the connection).
      const interrupted = yield* Fiber.join(transfer)
      assert.notStrictEqual(interrupted.code, 0, "a transfer to a killed peer cannot succeed")

      // Alpha re-keys with the new bravo and the next transfer goes through, within a bounded number of tries. On
      // another port, alpha first has to notice that its direct path went silent and resolve bravo again.
      const next = yield* ctl("bench", String(b.nodeId), "1", "--timeout", "10s", "--json", "--socket", a.socket).pipe(
        Effect.repeat({ until: (run) => run.code === 0, schedule: Schedule.spaced("500 millis"), times: 10 })
      )
      expect(okData(next)["bytes"]).toBe(1024 * 1024)

      // bravo's state survived the kill whole: same identity, same trust, both parseable; no temp file anywhere.
      const identityAfter = fs.readFileSync(identityPath, "utf8")
      expect(identityAfter).toBe(identityBefore)
      assert.isObject(JSON.parse(identityAfter))
      const trustAfter = fs.readFileSync(trustPath, "utf8")
      expect(trustAfter).toBe(trustBefore)
      const decoded = decodeTrustFile(trustAfter, Date.now())
      assert.strictEqual(decoded._tag, "Success", "trust.json decodes completely")
      expect(strays(bravoHome)).toEqual([])

      // End state: both stop on SIGTERM with exit 0 and their socket files gone.
      expect(yield* a.proc.stop("SIGTERM")).toBe(0)
      expect(yield* b2.proc.stop("SIGTERM")).toBe(0)
      assert.isFalse(fs.existsSync(a.socket), "alpha's socket file is removed")
      assert.isFalse(fs.existsSync(b2.socket), "bravo's socket file is removed")
      expect(strays(bravoHome)).toEqual([])
      expect(fs.readFileSync(trustPath, "utf8")).toBe(trustBefore)
      const client = yield* registry.client()
      for (const nodeId of [a.nodeId, b.nodeId]) {
        const gone = yield* Effect.flip(client.call({ type: "lookup", node_id: nodeId }))
        expect(gone._tag === "RegistryRejected" ? gone.code : gone._tag).toBe("node_not_found")
      }
    }), 180_000)
})

/**
 * `pilotctl` as users and scripts run it: a child process talking to a real `pilot-daemon` child process and a
 * real registry, checked on its exit code and on the exact stdout/stderr contract of reference §10.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { ERROR_CODES } from "../../src/pilotctl/errors.ts"
import { spawnDaemon } from "../support/daemon-child.ts"
import { startRegistry } from "../support/registry.ts"
import { assertErrorEnvelope, ctl, envelope, tempDir } from "./ctl-kit.ts"

const REGISTERED = /registered as node (\d+)/

const EVERY_COMMAND = [
  "context", "health", "info", "peers", "connections", "lookup", "set-hostname", "clear-hostname", "find",
  "set-public", "set-private", "set-tags", "clear-tags", "deregister", "handshake", "pending", "approve", "reject",
  "trust", "untrust", "prefer-direct", "disconnect", "connect", "send", "recv", "ping", "bench", "daemon start",
  "daemon stop", "daemon status", "send-message", "send-file", "inbox", "received", "subscribe", "publish"
]

describe("pilotctl", () => {
  it.live("health, info, peers and lookup against a running daemon and registry; daemon errors become envelopes", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const registry = yield* startRegistry()
      const { proc: daemon, socket } = yield* spawnDaemon({ home: dir, registry: `127.0.0.1:${registry.port}`, hostname: "alpha" })
      const nodeId = Number((yield* daemon.waitForLine(REGISTERED, "30 seconds"))[1])

      const health = yield* ctl("health", "--json", "--socket", socket)
      assert.strictEqual(health.code, 0, health.stderr)
      const healthEnvelope = envelope(health.stdout)
      assert.strictEqual(healthEnvelope["status"], "ok")
      assert.strictEqual((healthEnvelope["data"] as Record<string, unknown>)["status"], "ok")

      // `--json` anywhere: before the command works too. Without it: pretty JSON, not an envelope.
      const info = yield* ctl("--socket", socket, "info")
      assert.strictEqual(info.code, 0, info.stderr)
      assert.include(info.stdout, "\n  \"hostname\": \"alpha\"")
      const infoData = envelope(info.stdout)
      assert.strictEqual(infoData["node_id"], nodeId)
      assert.isUndefined(infoData["status"])

      const peers = yield* ctl("--json", "peers", "--socket", socket)
      assert.deepStrictEqual(envelope(peers.stdout), { status: "ok", data: { peers: [], total: 0 } })

      const lookup = yield* ctl("lookup", String(nodeId), "--registry", `127.0.0.1:${registry.port}`, "--json")
      assert.strictEqual(lookup.code, 0, lookup.stderr)
      assert.strictEqual((envelope(lookup.stdout)["data"] as Record<string, unknown>)["hostname"], "alpha")
      const missing = yield* ctl("lookup", String(nodeId + 1000), "--registry", `127.0.0.1:${registry.port}`, "--json")
      assertErrorEnvelope(missing, "not_found")

      // Whatever the daemon answers to a command it may not implement yet, pilotctl reports it cleanly.
      const setHostname = yield* ctl("set-hostname", "beta", "--json", "--socket", socket)
      if (setHostname.code === 0) assert.strictEqual(envelope(setHostname.stdout)["status"], "ok")
      else {
        const code = String(envelope(setHostname.stderr)["code"])
        assert.include(ERROR_CODES, code)
        assertErrorEnvelope(setHostname, code)
      }

      const badNode = yield* ctl("approve", "not-a-node", "--json", "--socket", socket)
      assertErrorEnvelope(badNode, "invalid_argument")
    }), 90_000)

  it.live("no daemon: not_running envelope and exit 1; plain text without --json", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const socket = path.join(dir, "absent.sock")
      const error = assertErrorEnvelope(yield* ctl("health", "--json", "--socket", socket), "not_running")
      assert.isString(error["hint"])
      const text = yield* ctl("info", "--socket", socket)
      assert.strictEqual(text.code, 1)
      assert.match(text.stderr, /^error: daemon is not running .*\nhint: /)
      const check = yield* ctl("daemon", "status", "--check", "--socket", socket)
      assert.deepStrictEqual([check.code, check.stdout, check.stderr], [1, "", ""])
    }), 30_000)

  it.live("usage errors exit 2, with an invalid_argument envelope under --json", () =>
    Effect.gen(function*() {
      const missingArg = yield* ctl("lookup")
      assert.strictEqual(missingArg.code, 2)
      const unknown = yield* ctl("bogus", "--json")
      assert.strictEqual(unknown.code, 2)
      const error = envelope(unknown.stderr.trim().split("\n").at(-1)!)
      assert.strictEqual(error["code"], "invalid_argument")
      assert.include(String(error["message"]), "bogus")
      const badTimeout = yield* ctl("health", "--timeout", "soon", "--json")
      assertErrorEnvelope(badTimeout, "invalid_argument")
    }), 30_000)

  it.live("context --json lists every command with its arguments, flags, outputs and error codes", () =>
    Effect.gen(function*() {
      const run = yield* ctl("context", "--json")
      assert.strictEqual(run.code, 0, run.stderr)
      const data = envelope(run.stdout)["data"] as {
        readonly commands: ReadonlyArray<{ readonly name: string; readonly arguments: ReadonlyArray<{ readonly name: string }>; readonly flags: ReadonlyArray<{ readonly name: string }>; readonly returns: ReadonlyArray<string>; readonly errors: ReadonlyArray<string> }>
        readonly error_codes: ReadonlyArray<string>
      }
      assert.deepStrictEqual(data.commands.map((c) => c.name).toSorted(), EVERY_COMMAND.toSorted())
      const lookup = data.commands.find((c) => c.name === "lookup")!
      assert.deepStrictEqual(lookup.arguments.map((a) => a.name), ["node_id"])
      assert.include(lookup.errors, "not_found")
      assert.include(data.commands.find((c) => c.name === "daemon status")!.flags.map((f) => f.name), "check")
      for (const command of data.commands) {
        for (const code of command.errors) assert.include(data.error_codes, code)
      }
    }), 30_000)

  it.live("daemon start runs a background daemon; status --check sees it; stop ends it and removes its socket", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const socket = path.join(dir, "bg.sock")
      const pidFile = `${socket}.pid`
      // If an assertion fails half-way, do not leave a detached daemon behind.
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          if (!fs.existsSync(pidFile)) return
          try {
            process.kill(Number(fs.readFileSync(pidFile, "utf8")), "SIGKILL")
          } catch {
            // already gone
          }
        }))
      const start = yield* ctl("daemon", "start", "--json", "--socket", socket, "--registry", "127.0.0.1:1",
        "--listen", "127.0.0.1:0", "--identity", path.join(dir, "id.json"), "--hostname", "bg")
      assert.strictEqual(start.code, 0, start.stderr)
      const started = envelope(start.stdout)["data"] as Record<string, unknown>
      assert.strictEqual(started["hostname"], "bg")
      assert.strictEqual(String(started["pid"]), fs.readFileSync(pidFile, "utf8").trim())

      const check = yield* ctl("daemon", "status", "--check", "--socket", socket)
      assert.deepStrictEqual([check.code, check.stdout], [0, ""])
      const again = yield* ctl("daemon", "start", "--json", "--socket", socket)
      assertErrorEnvelope(again, "already_exists")

      const stop = yield* ctl("daemon", "stop", "--json", "--socket", socket)
      assert.strictEqual(stop.code, 0, stop.stderr)
      assert.deepStrictEqual(envelope(stop.stdout)["data"], { pid: started["pid"], forced: false })
      assert.isFalse(fs.existsSync(socket), "the daemon removed its socket")
      assert.isFalse(fs.existsSync(pidFile), "the pid file is removed")
      const after = yield* ctl("daemon", "status", "--check", "--socket", socket)
      assert.strictEqual(after.code, 1)
    }), 90_000)
})

/**
 * pilotctl's stream commands (connect, send, recv, ping, bench) between two real `pilot-daemon` child processes
 * registered to one registry and made public with `pilotctl set-public`, and the config file of global defaults.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schedule } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { formatAddr } from "../../src/protocol/address.ts"
import { startRegistry } from "../support/registry.ts"
import { assertErrorEnvelope, ctl, ctlWithEnv, okData, startCtlDaemon, startCtlPair, tempDir } from "./ctl-kit.ts"

describe("pilotctl stream commands", () => {
  it.live("ping, connect and bench against the peer's echo service; send delivers to recv", () =>
    Effect.gen(function*() {
      const { a, b } = yield* startCtlPair()
      const target = String(b.nodeId)

      const ping = okData(yield* ctl("ping", target, "--count", "3", "--json", "--socket", a.socket))
      assert.strictEqual(ping["target"], formatAddr({ network: 0, node: b.nodeId }))
      const results = ping["results"] as ReadonlyArray<{ readonly seq: number; readonly rtt_ms: number }>
      assert.deepStrictEqual(results.map((r) => r.seq), [1, 2, 3])
      for (const r of results) assert.isAtLeast(r.rtt_ms, 0)
      assert.strictEqual(ping["received"], 3)

      // By hostname, to the echo port: the message comes back.
      const connect = okData(yield* ctl("connect", "bravo", "7", "--message", "hello echo", "--json", "--socket", a.socket))
      assert.deepStrictEqual(connect, { target: ping["target"], port: 7, sent: "hello echo", response: "hello echo" })

      const bench = okData(yield* ctl("bench", target, "1", "--json", "--socket", a.socket))
      assert.strictEqual(bench["bytes"], 1024 * 1024)
      assert.isAbove(bench["total_mbps"] as number, 0)
      assert.isAtLeast(bench["total_ms"] as number, bench["send_ms"] as number)

      // recv binds port 1000 on bravo; send is repeated until bravo accepts (the bind races the first dial).
      const receiver = yield* Effect.forkChild(ctl("recv", "1000", "--count", "1", "--timeout", "30s", "--json", "--socket", b.socket))
      const sent = yield* ctl("send", target, "1000", "--data", "over the overlay", "--json", "--socket", a.socket).pipe(
        Effect.repeat({ until: (run) => run.code === 0, schedule: Schedule.spaced("200 millis"), times: 100 })
      )
      assert.deepStrictEqual(okData(sent), { target: ping["target"], port: 1000, bytes: 16 })
      const received = okData(yield* Fiber.join(receiver))
      assert.deepStrictEqual(received, { messages: [{ seq: 1, port: 1000, data: "over the overlay", bytes: 16 }], timeout: false })

      // Nobody bound: recv reports what it got before the deadline.
      const idle = okData(yield* ctl("recv", "1005", "--timeout", "300ms", "--json", "--socket", b.socket))
      assert.deepStrictEqual(idle, { messages: [], timeout: true })
    }), 120_000)

  it.live("config file: supplies --socket; the flag overrides it; ~/.pilot/config.json is the default; bad files are errors", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const registry = yield* startRegistry()
      const a = yield* startCtlDaemon(dir, registry.port, "alpha")
      const config = path.join(dir, "ctl.json")
      fs.writeFileSync(config, JSON.stringify({ socket: a.socket, unrelated: 1 }))

      assert.strictEqual(okData(yield* ctl("health", "--json", "--config", config))["status"], "ok")
      assertErrorEnvelope(yield* ctl("health", "--json", "--config", config, "--socket", path.join(dir, "absent.sock")), "not_running")

      const home = path.join(dir, "home")
      fs.mkdirSync(path.join(home, ".pilot"), { recursive: true })
      fs.writeFileSync(path.join(home, ".pilot", "config.json"), JSON.stringify({ socket: a.socket, timeout: "5s" }))
      assert.strictEqual(okData(yield* ctlWithEnv({ HOME: home }, "health", "--json"))["status"], "ok")
      // The environment sits between the file and the flag.
      assertErrorEnvelope(yield* ctlWithEnv({ HOME: home, PILOT_SOCKET: path.join(dir, "absent.sock") }, "health", "--json"), "not_running")

      assertErrorEnvelope(yield* ctl("health", "--json", "--config", path.join(dir, "missing.json")), "invalid_argument")
      fs.writeFileSync(config, JSON.stringify({ timeout: 5 }))
      assertErrorEnvelope(yield* ctl("health", "--json", "--config", config), "invalid_argument")
    }), 90_000)
})

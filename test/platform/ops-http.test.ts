/**
 * The operations HTTP endpoint on a real loopback port: probe verdicts and status codes, the `status` field
 * always being the verdict, and `/metrics` = the Metric registry (refreshed by `collect`) followed by the
 * component's own rendered text. Ends with the port closed and nothing left running.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import * as http from "node:http"
import { daemonProbes, renderDaemonMetrics } from "../../src/daemon/metrics.ts"
import type { DaemonSnapshot } from "../../src/daemon/status.ts"
import { serveOpsHttp } from "../../src/platform/ops-http.ts"
import { expectNoLeaks } from "../support/leak-check.ts"

interface Reply {
  readonly status: number
  readonly contentType: string | undefined
  readonly text: string
}

/** One GET without keep-alive (so no socket outlives the request). */
const get = (port: number, path: string) =>
  Effect.callback<Reply, Error>((resume) => {
    const request = http.get({ host: "127.0.0.1", port, path, agent: false }, (response) => {
      let text = ""
      response.on("data", (chunk: Buffer) => (text += chunk.toString()))
      response.on("end", () => resume(Effect.succeed({ status: response.statusCode ?? 0, contentType: response.headers["content-type"], text })))
    })
    request.on("error", (error) => resume(Effect.fail(error)))
    return Effect.sync(() => request.destroy())
  })

// `NodeHttpServer.layer` provides NodeServices, whose Terminal reads `process.stdin` once per process: Node then
// opens the stdin pipe for good. Open it before the leak checks so that process-wide handle is not charged to the
// endpoint (in the binaries stdin is opened anyway; under systemd it is /dev/null).
void process.stdin

const refused = (port: number) => Effect.flip(get(port, "/health"))

const snapshot = (registered: boolean): DaemonSnapshot => ({
  nowMs: 10_000,
  startedMs: 0,
  accepting: true,
  session: { registered: registered ? { nodeId: 9, address: "0:0000.0000.0009" } : undefined, lastOkMillis: undefined, consecutiveFailures: 1, lastError: "down" },
  endpoint: ":4000",
  hostname: undefined,
  version: "0.0.0",
  dataDirectory: "/tmp",
  trustPending: 0,
  plane: undefined
})

describe("ops HTTP endpoint", () => {
  it.live("serves the daemon's probes and metrics from live state; the port is closed when the scope ends", () =>
    Effect.gen(function*() {
      let registered = false
      let collected = 0
      const scrapes = Metric.gauge("pilot_test_scrapes", { description: "scrapes seen by collect" })
      const current = Effect.sync(() => snapshot(registered))
      const port = yield* expectNoLeaks(Effect.gen(function*() {
        const bound = yield* serveOpsHttp({ host: "127.0.0.1", port: 0 }, {
          health: Effect.map(current, (s) => daemonProbes(s).health),
          ready: Effect.map(current, (s) => daemonProbes(s).ready),
          metrics: {
            collect: Effect.suspend(() => Metric.update(scrapes, ++collected)),
            render: Effect.map(current, (snapshot) => renderDaemonMetrics({ snapshot }))
          }
        })
        assert.notStrictEqual(bound._tag, "UnixPathAddress")
        const port = bound._tag === "UnixPathAddress" ? 0 : bound.port

        const health = yield* get(port, "/health")
        expect(health.status).toBe(200)
        expect(JSON.parse(health.text)).toMatchObject({ status: "ok", accepting: true, registered: false })
        const notReady = yield* get(port, "/ready")
        expect(notReady.status).toBe(503)
        // The details carry the daemon's own `status: "ok"` (health JSON); the verdict wins.
        expect(JSON.parse(notReady.text)).toMatchObject({ status: "failing", failing: ["not_registered", "data_plane_not_running"] })

        registered = true
        const metrics = yield* get(port, "/metrics")
        expect(metrics.status).toBe(200)
        expect(metrics.contentType).toContain("version=0.0.4")
        expect(metrics.text).toMatch(/^pilot_test_scrapes 1$/m)
        expect(metrics.text).toMatch(/^pilot_daemon_registered 1$/m)
        expect(metrics.text).toMatch(/^pilot_daemon_uptime_seconds 10$/m)
        expect(metrics.text.indexOf("pilot_test_scrapes")).toBeLessThan(metrics.text.indexOf("pilot_daemon_up"))
        expect((yield* get(port, "/metrics")).text).toMatch(/^pilot_test_scrapes 2$/m)
        return port
      }))
      // Closed with the scope: nothing answers any more.
      const error = yield* refused(port)
      assert.match(error.message, /ECONNREFUSED/)
    }), 30_000)

  it.live("without component metrics, /metrics is the registry's exposition alone", () =>
    Effect.gen(function*() {
      yield* expectNoLeaks(Effect.gen(function*() {
        yield* Metric.update(Metric.counter("pilot_test_events_total", { description: "events", incremental: true }), 3)
        const ok = Effect.succeed({ ok: true, details: {} })
        const bound = yield* serveOpsHttp({ host: "127.0.0.1", port: 0 }, { health: ok, ready: ok })
        const port = bound._tag === "UnixPathAddress" ? 0 : bound.port
        const metrics = yield* get(port, "/metrics")
        expect(metrics.text).toMatch(/^pilot_test_events_total 3$/m)
        expect(metrics.text).not.toContain("pilot_daemon")
        expect(JSON.parse((yield* get(port, "/ready")).text)).toEqual({ status: "ok" })
      }))
    }), 30_000)
})

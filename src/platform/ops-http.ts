/**
 * The operations HTTP endpoint every binary can serve (`--http ADDR`):
 * - `GET /health` — liveness: 200 while the component's essential parts are alive now, 503 otherwise;
 * - `GET /ready` — readiness: 200 once the component does its job (e.g. a daemon is registered);
 * - `GET /metrics` — Prometheus text exposition of every metric in the process: Effect's Metric registry,
 *   followed by the component's own text (`OpsProbes.metrics`, e.g. the daemon's snapshot-rendered figures).
 * Probes report live state computed on each request, never a latch set once at start (DESIGN.md §4 rule 5).
 * A probe's `status` field is always the verdict ("ok" / "failing"), whatever its details carry.
 */
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Layer } from "effect"
import { HttpRouter, HttpServer, HttpServerResponse } from "effect/http"
import type { SocketAddress } from "effect/net/NetAddress"
import { PrometheusMetrics } from "effect/observability"
import { createServer } from "node:http"
import type { HostPort } from "./host-port.ts"

export interface ProbeReport {
  readonly ok: boolean
  /** Shown to the operator as JSON beside the status. */
  readonly details: Readonly<Record<string, unknown>>
}

export interface OpsProbes {
  readonly health: Effect.Effect<ProbeReport>
  readonly ready: Effect.Effect<ProbeReport>
  /**
   * Optional metrics of the component: `collect` runs first on each scrape (to refresh gauges in the Metric
   * registry from a snapshot), then the registry is formatted, then `render`'s text (exposition format 0.0.4,
   * metric names that do not collide with the registry's) is appended.
   */
  readonly metrics?: {
    readonly collect?: Effect.Effect<void>
    readonly render?: Effect.Effect<string>
  }
}

/** The `/metrics` body: the registry's exposition, then the component's own. */
export const metricsText = (metrics: OpsProbes["metrics"]): Effect.Effect<string> =>
  Effect.gen(function*() {
    if (metrics?.collect !== undefined) yield* metrics.collect
    const registry = yield* PrometheusMetrics.format()
    if (metrics?.render === undefined) return registry
    const own = yield* metrics.render
    if (registry.length === 0) return own
    return registry.endsWith("\n") ? registry + own : `${registry}\n${own}`
  })

const probeRoute = (path: "/health" | "/ready", probe: Effect.Effect<ProbeReport>) =>
  HttpRouter.add(
    "GET",
    path,
    Effect.flatMap(probe, (report) =>
      HttpServerResponse.json({ ...report.details, status: report.ok ? "ok" : "failing" }, { status: report.ok ? 200 : 503 }))
  )

/**
 * Serves the endpoint at `address` until the scope closes; returns the bound address (`port: 0` picks one).
 * Read timeouts are set on the Node server so a slow client cannot hold a connection open.
 */
export const serveOpsHttp = Effect.fnUntraced(function*(address: HostPort, probes: OpsProbes) {
  const routes = Layer.mergeAll(
    probeRoute("/health", probes.health),
    probeRoute("/ready", probes.ready),
    HttpRouter.add(
      "GET",
      "/metrics",
      Effect.map(metricsText(probes.metrics), (text) =>
        HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" }))
    )
  )
  const server = HttpRouter.serve(routes, { disableListenLog: true, disableLogger: true }).pipe(
    Layer.provideMerge(
      NodeHttpServer.layer(() => createServer({ requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000 }), {
        port: address.port,
        ...(address.host === undefined ? {} : { host: address.host }),
        gracefulShutdownTimeout: "2 seconds"
      })
    )
  )
  const context = yield* Layer.build(server)
  const bound: SocketAddress = Context.get(context, HttpServer.HttpServer).address
  return bound
})

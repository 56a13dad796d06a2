/**
 * The registry's Prometheus metrics (served at `/metrics` by `--http`). Names follow Prometheus conventions:
 * `_total` for counters, base units (seconds) in the name.
 */
import { Metric } from "effect"

export const requestsTotal = Metric.counter("pilot_registry_requests_total", {
  description: "Requests answered, by message type",
  incremental: true
})
export const errorsTotal = Metric.counter("pilot_registry_errors_total", {
  description: "Error replies and dropped connections, by machine-readable code",
  incremental: true
})
export const connectionsActive = Metric.gauge("pilot_registry_connections_active", {
  description: "Client connections open now"
})
export const connectionsRejectedTotal = Metric.counter("pilot_registry_connections_rejected_total", {
  description: "Connections refused because the connection cap was reached",
  incremental: true
})
export const nodesOnline = Metric.gauge("pilot_registry_nodes_online", {
  description: "Nodes holding a live lease"
})
export const storeLatencySeconds = Metric.histogram("pilot_registry_store_latency_seconds", {
  description: "Latency of store operations, by request type",
  boundaries: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]
})

export const countRequest = (type: string) => Metric.update(Metric.withAttributes(requestsTotal, { type }), 1)
export const countError = (code: string) => Metric.update(Metric.withAttributes(errorsTotal, { code }), 1)

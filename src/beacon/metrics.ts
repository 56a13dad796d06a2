/**
 * The beacon's Prometheus metrics (served at `/metrics`). The hot path bumps plain counters in the core
 * (beacon-state.ts) — no Effect, no map lookup per datagram — and each series here is registered with a
 * `get` hook that reads those counters when metrics are scraped (`Metric.registerUnsafe`). The series are
 * removed when the beacon's scope closes, so a stopped beacon leaves nothing behind in the registry.
 *
 * Names follow Prometheus conventions: `_total` for counters.
 */
import { Effect, Metric } from "effect"
import { type BeaconStats, DROP_REASONS, MESSAGE_TYPES, RELAY_DROP_REASONS } from "./beacon-state.ts"

export const METRIC_NAMES = {
  messages: "pilot_beacon_messages_total",
  dropped: "pilot_beacon_dropped_total",
  relayDelivered: "pilot_beacon_relay_delivered_total",
  relayForwarded: "pilot_beacon_relay_forwarded_total",
  relayDropped: "pilot_beacon_relay_dropped_total",
  punchCommands: "pilot_beacon_punch_commands_total",
  discoverReplies: "pilot_beacon_discover_replies_total",
  syncsSent: "pilot_beacon_syncs_sent_total",
  syncsReceived: "pilot_beacon_syncs_received_total",
  evictions: "pilot_beacon_evictions_total",
  sendQueueDrops: "pilot_beacon_send_queue_drops_total",
  nodes: "pilot_beacon_nodes",
  peerBeacons: "pilot_beacon_peer_beacons",
  peerOwnedNodes: "pilot_beacon_peer_owned_nodes",
  registered: "pilot_beacon_registered"
} as const

const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })
const gauge = (name: string, description: string) => Metric.gauge(name, { description })

const messages = counter(METRIC_NAMES.messages, "Beacon messages received, by type")
const dropped = counter(METRIC_NAMES.dropped, "Datagrams dropped, by reason (relays have their own counter)")
const relayDelivered = counter(METRIC_NAMES.relayDelivered, "Relayed frames delivered to a local node as RelayDeliver")
const relayForwarded = counter(METRIC_NAMES.relayForwarded, "Relayed frames forwarded to the peer beacon that owns the destination")
const relayDropped = counter(METRIC_NAMES.relayDropped, "Relayed frames dropped, by reason")
const punchCommands = counter(METRIC_NAMES.punchCommands, "PunchCommand messages sent")
const discoverReplies = counter(METRIC_NAMES.discoverReplies, "DiscoverReply messages sent")
const syncsSent = counter(METRIC_NAMES.syncsSent, "Sync datagrams sent to peer beacons")
const syncsReceived = counter(METRIC_NAMES.syncsReceived, "Sync datagrams accepted from peer beacons")
const evictions = counter(METRIC_NAMES.evictions, "Entries dropped to keep a table within its cap, by table")
const sendQueueDrops = counter(METRIC_NAMES.sendQueueDrops, "Datagrams dropped because the UDP send queue was full")
const nodes = gauge(METRIC_NAMES.nodes, "Nodes in the local node table")
const peerBeacons = gauge(METRIC_NAMES.peerBeacons, "Peer beacons known (static and listed by the registry)")
const peerOwnedNodes = gauge(METRIC_NAMES.peerOwnedNodes, "Nodes that peer beacons gossiped as theirs")
const registered = gauge(METRIC_NAMES.registered, "1 while the beacon's last registration with the registry succeeded")

export interface BeaconMetricSources {
  readonly stats: () => BeaconStats
  readonly sendQueueDrops: () => number
  readonly registered: () => boolean
}

/** Registers every series in the current metric registry until the scope closes. */
export const registerBeaconMetrics = (sources: BeaconMetricSources) =>
  Effect.gen(function*() {
    const context = yield* Effect.context<never>()
    const registrations: Array<Metric.Registration> = []
    const count = (metric: Metric.Counter<number>, read: () => number, attributes?: Record<string, string>) => {
      const series = attributes === undefined ? metric : Metric.withAttributes(metric, attributes)
      registrations.push(Metric.registerUnsafe(series, context, {
        get: () => ({ count: read(), incremental: true }),
        update: () => {},
        modify: () => {}
      }))
    }
    const level = (metric: Metric.Gauge<number>, read: () => number) => {
      registrations.push(Metric.registerUnsafe(metric, context, { get: () => ({ value: read() }), update: () => {}, modify: () => {} }))
    }
    const s = sources.stats
    for (const type of MESSAGE_TYPES) count(messages, () => s().messages[type], { type })
    for (const reason of DROP_REASONS) count(dropped, () => s().drops[reason], { reason })
    for (const reason of RELAY_DROP_REASONS) count(relayDropped, () => s().relayDropped[reason], { reason })
    count(relayDelivered, () => s().relayDelivered)
    count(relayForwarded, () => s().relayForwarded)
    count(punchCommands, () => s().punchCommands)
    count(discoverReplies, () => s().discoverReplies)
    count(syncsSent, () => s().syncsSent)
    count(syncsReceived, () => s().syncsReceived)
    count(evictions, () => s().nodeEvictions, { table: "nodes" })
    count(evictions, () => s().ownershipOverflow, { table: "ownership" })
    count(evictions, () => s().peerOverflow, { table: "peers" })
    count(evictions, () => s().rateLimitEvictions, { table: "rate_limit" })
    count(sendQueueDrops, sources.sendQueueDrops)
    level(nodes, () => s().nodes)
    level(peerBeacons, () => s().peers)
    level(peerOwnedNodes, () => s().ownedByPeers)
    level(registered, () => (sources.registered() ? 1 : 0))
    yield* Effect.addFinalizer(() => Effect.sync(() => registrations.forEach((r) => r.remove())))
  })

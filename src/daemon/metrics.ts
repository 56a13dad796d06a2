/**
 * The daemon's `/metrics` text and its `/health` and `/ready` verdicts, computed from one snapshot of live state.
 *
 * Why a pure renderer rather than Effect `Metric` gauges: the daemon's figures already live in plain counters
 * (tunnel, UDP, transport, IPC) that the hot path bumps without Effect, and `DaemonSnapshot` copies them on
 * demand. Mirroring them into the process-wide Metric registry would mean a second copy refreshed by a collect
 * step, process-global state that two daemons built in one test process would share, and values that can go
 * stale between scrapes. Rendering the snapshot taken for the scrape itself is exact, allocation-bounded (no
 * label grows with outside input: the IPC command label is bounded by the protocol's command set) and testable
 * without a runtime. `serveOpsHttp` appends this text to the registry's own output (`OpsProbes.metrics`).
 *
 * Exposition: Prometheus text format 0.0.4 — one `# HELP` and one `# TYPE` line per family, counters named
 * `_total`, base units (seconds, bytes) in names, label values escaped. A series whose value is unknown (an age
 * before the first event) is left out rather than exported as a sentinel.
 *
 * Probes (DESIGN.md §4 rule 5): live state, never a latch. Health is liveness — the sockets are bound and the
 * IPC server serves (`accepting`); a daemon that lost its registry is still alive and must not be restarted for
 * it. Ready is "can carry traffic": accepting, registered, and the data plane running (it starts right after the
 * first registration).
 */
import type { IpcServerStats } from "../ipc/stats.ts"
import type { ProbeReport } from "../platform/ops-http.ts"
import type { RxWatchdogState } from "./rx-watchdog.ts"
import { type DaemonSnapshot, healthJson } from "./status.ts"

export interface DaemonMetricsInput {
  readonly snapshot: DaemonSnapshot
  /**
   * Monotonic milliseconds on the tunnel's clock (`Clock.monotonicTimeNanos / 1e6`), to age `last_recv_ms`
   * (which is monotonic). Without it the receive age is not exported.
   */
  readonly monotonicNowMs?: number
  /** The IPC server's counters (`IpcServer.stats`). */
  readonly ipc?: IpcServerStats
  /** The receive watchdog's state, when it runs. */
  readonly watchdog?: RxWatchdogState
}

type Labels = Readonly<Record<string, string>>
interface Sample {
  readonly labels?: Labels
  readonly value: number
}
type MetricType = "counter" | "gauge"

export const METRIC_NAME = /^[a-z_:][a-z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/

const escapeHelp = (text: string): string => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")
export const escapeLabelValue = (text: string): string => text.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")

const formatValue = (value: number): string => {
  if (Number.isNaN(value)) return "NaN"
  if (value === Infinity) return "+Inf"
  if (value === -Infinity) return "-Inf"
  return String(value)
}

/** Accumulates metric families; a family name or label name that breaks the format is a bug, so it throws. */
class Exposition {
  private readonly lines: Array<string> = []
  private readonly names = new Set<string>()

  family(name: string, type: MetricType, help: string, samples: ReadonlyArray<Sample>): void {
    if (!METRIC_NAME.test(name) || this.names.has(name)) throw new Error(`bad or duplicate metric family ${name}`)
    if (type === "counter" && !name.endsWith("_total")) throw new Error(`counter ${name} must end in _total`)
    this.names.add(name)
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`)
    for (const sample of samples) {
      const labels = Object.entries(sample.labels ?? {})
      for (const [label] of labels) if (!LABEL_NAME.test(label)) throw new Error(`bad label name ${label}`)
      const text = labels.length === 0 ? "" : `{${labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",")}}`
      this.lines.push(`${name}${text} ${formatValue(sample.value)}`)
    }
  }

  one(name: string, type: MetricType, help: string, value: number | undefined): void {
    this.family(name, type, help, value === undefined ? [] : [{ value }])
  }

  byLabel(name: string, type: MetricType, help: string, label: string, values: Readonly<Record<string, number>>): void {
    this.family(name, type, help, Object.keys(values).sort().map((key) => ({ labels: { [label]: key }, value: values[key]! })))
  }

  text(): string {
    return this.lines.length === 0 ? "" : `${this.lines.join("\n")}\n`
  }
}

const bool = (b: boolean): number => (b ? 1 : 0)

/** Renders every daemon metric for one scrape (Prometheus text format 0.0.4, ends with a newline). */
export const renderDaemonMetrics = (input: DaemonMetricsInput): string => {
  const { snapshot: s } = input
  const out = new Exposition()
  const tunnel = s.plane?.tunnel
  const transport = s.plane?.transport
  const udp = tunnel?.udp

  // Process and lifecycle.
  out.one("pilot_daemon_up", "gauge", "1 while the daemon process serves this endpoint", 1)
  out.family("pilot_daemon_build_info", "gauge", "Always 1; the version is a label", [{ labels: { version: s.version }, value: 1 }])
  out.one("pilot_daemon_start_time_seconds", "gauge", "When the daemon started, Unix seconds", s.startedMs / 1000)
  out.one("pilot_daemon_uptime_seconds", "gauge", "Seconds since the daemon started", Math.max(0, (s.nowMs - s.startedMs) / 1000))
  out.one("pilot_daemon_accepting", "gauge", "1 while the UDP and IPC sockets are bound and served", bool(s.accepting))
  out.one("pilot_daemon_registered", "gauge", "1 while the registry has confirmed our entry", bool(s.session.registered !== undefined))
  out.one("pilot_daemon_data_plane_running", "gauge", "1 once the tunnel and transport run (after the first registration)", bool(s.plane !== undefined))
  out.one("pilot_daemon_registry_consecutive_failures", "gauge", "Registry calls failed in a row since the last success", s.session.consecutiveFailures)
  out.one(
    "pilot_daemon_registry_last_success_age_seconds",
    "gauge",
    "Seconds since a registry call last succeeded (absent before the first)",
    s.session.lastOkMillis === undefined ? undefined : Math.max(0, (s.nowMs - s.session.lastOkMillis) / 1000)
  )
  const lastRecv = tunnel?.last_recv_ms
  out.one(
    "pilot_daemon_last_receive_age_seconds",
    "gauge",
    "Seconds since the tunnel socket last received a datagram of any kind (absent before the first)",
    lastRecv === undefined || input.monotonicNowMs === undefined ? undefined : Math.max(0, (input.monotonicNowMs - lastRecv) / 1000)
  )
  out.one("pilot_trust_pending_requests", "gauge", "Trust handshake requests waiting for a local decision", s.trustPending)

  // Tunnel.
  out.one("pilot_tunnel_peers", "gauge", "Peers held by the peer table (with a session, waiting for a key, or cooling down)", tunnel?.peers ?? 0)
  out.one("pilot_tunnel_encrypted_peers", "gauge", "Peers with an installed session", tunnel?.encrypted_peers ?? 0)
  out.one("pilot_tunnel_authenticated_peers", "gauge", "Peers whose session is authenticated by their registry key", tunnel?.authenticated_peers ?? 0)
  out.one("pilot_tunnel_handshakes_pending", "gauge", "Peers with a key exchange sent and unanswered", tunnel?.handshake_pending_count ?? 0)
  out.one("pilot_tunnel_packets_sent_total", "counter", "Packets sent through the tunnel", tunnel?.pkts_sent ?? 0)
  out.one("pilot_tunnel_packets_received_total", "counter", "Packets received and delivered by the tunnel", tunnel?.pkts_recv ?? 0)
  out.one("pilot_tunnel_bytes_sent_total", "counter", "Bytes sent through the tunnel", tunnel?.bytes_sent ?? 0)
  out.one("pilot_tunnel_bytes_received_total", "counter", "Bytes received through the tunnel", tunnel?.bytes_recv ?? 0)
  out.one("pilot_tunnel_frames_authenticated_total", "counter", "Encrypted frames whose AEAD tag verified", tunnel?.tunnel_encryption_success ?? 0)
  out.one(
    "pilot_tunnel_encryption_failures_total",
    "counter",
    "Encrypted frames whose AEAD tag did not verify (forged, corrupted, or under a retired key)",
    tunnel?.tunnel_encryption_failure ?? 0
  )
  out.one("pilot_tunnel_sessions_installed_total", "counter", "Tunnel sessions installed (key exchanges completed)", tunnel?.sessions_installed ?? 0)
  out.one("pilot_tunnel_sessions_dropped_total", "counter", "Tunnel sessions dropped", tunnel?.sessions_dropped ?? 0)
  out.one("pilot_tunnel_keepalives_sent_total", "counter", "Keepalives sent", tunnel?.keepalives_sent ?? 0)
  out.one("pilot_tunnel_key_exchanges_sent_total", "counter", "Key-exchange frames sent", tunnel?.kx_sent ?? 0)
  out.one("pilot_tunnel_key_exchanges_accepted_total", "counter", "Key-exchange frames accepted", tunnel?.kx_accepted ?? 0)
  out.one("pilot_tunnel_registry_lookups_total", "counter", "Registry key lookups made by the tunnel", tunnel?.registry_lookups ?? 0)
  out.one("pilot_tunnel_registry_lookup_failures_total", "counter", "Registry key lookups that failed", tunnel?.registry_lookup_failures ?? 0)
  out.one("pilot_tunnel_endpoint_lookups_total", "counter", "Endpoint lookups for peers not heard from yet", tunnel?.endpoint_lookups ?? 0)
  out.one("pilot_tunnel_endpoint_lookup_failures_total", "counter", "Endpoint lookups that failed", tunnel?.endpoint_lookup_failures ?? 0)
  out.one("pilot_tunnel_relay_peers", "gauge", "Peers whose traffic goes through the beacon relay", tunnel?.relay_peer_count ?? 0)
  out.one("pilot_tunnel_path_probes_sent_total", "counter", "Path probes sent directly to relayed peers", tunnel?.path_probes_sent ?? 0)
  out.one("pilot_tunnel_path_probes_answered_total", "counter", "Peers' path probes answered", tunnel?.path_probes_answered ?? 0)
  const beacon = tunnel?.beacon
  out.one("pilot_beacon_discovers_sent_total", "counter", "Discover messages sent to the beacon", beacon?.discovers_sent ?? 0)
  out.one("pilot_beacon_punch_requests_sent_total", "counter", "Punch requests sent to the beacon", beacon?.punch_requests_sent ?? 0)
  out.one("pilot_beacon_punches_sent_total", "counter", "NAT punches sent at the beacon's request", beacon?.punches_sent ?? 0)
  out.one("pilot_beacon_relay_frames_sent_total", "counter", "Frames sent through the beacon relay", beacon?.relay_frames_sent ?? 0)
  out.one("pilot_beacon_relay_frames_received_total", "counter", "Frames received through the beacon relay", beacon?.relay_frames_received ?? 0)
  out.one("pilot_beacon_messages_refused_total", "counter", "Beacon messages refused (wrong source, malformed, not for a node)", beacon?.beacon_messages_refused ?? 0)
  out.one("pilot_tunnel_fragments_sent_total", "counter", "PILF fragments sent", tunnel?.fragments_sent ?? 0)
  out.one("pilot_tunnel_frames_reassembled_total", "counter", "Frames reassembled from PILF fragments", tunnel?.frames_reassembled ?? 0)
  const drops = tunnel?.drops
  out.byLabel("pilot_tunnel_drops_total", "counter", "Incoming datagrams dropped, by reason", "reason", {
    unknown_magic: drops?.unknown_magic ?? 0,
    malformed: drops?.malformed ?? 0,
    plaintext: drops?.plaintext ?? 0,
    beacon: drops?.beacon ?? 0,
    punch: drops?.punch ?? 0,
    no_session: drops?.no_session ?? 0,
    replay: drops?.replay ?? 0,
    outside_window: drops?.outside_window ?? 0,
    stale_epoch: drops?.stale_epoch ?? 0,
    spoofed_source: drops?.spoofed_source ?? 0,
    inner_malformed: drops?.inner_malformed ?? 0,
    kx_rate_limited: drops?.kx_rate_limited ?? 0,
    kx_queue_full: drops?.kx_queue_full ?? 0
  })
  out.byLabel("pilot_tunnel_key_exchanges_rejected_total", "counter", "Key-exchange frames refused before the key-exchange core, by reason", "reason", {
    registry_key_unavailable: drops?.kx_rejected.registry_key_unavailable ?? 0,
    registry_key_mismatch: drops?.kx_rejected.registry_key_mismatch ?? 0,
    bad_signature: drops?.kx_rejected.bad_signature ?? 0,
    own_node: drops?.kx_rejected.own_node ?? 0
  })
  out.byLabel("pilot_tunnel_send_drops_total", "counter", "Outgoing packets the tunnel refused, by reason", "reason", {
    rekey_cooldown: drops?.send.rekey_cooldown ?? 0,
    pending_full: drops?.send.pending_full ?? 0,
    pending_peers_full: drops?.send.pending_peers_full ?? 0,
    peer_table_full: drops?.send.peer_table_full ?? 0,
    send_queue_full: drops?.send.send_queue_full ?? 0,
    no_endpoint: drops?.send.no_endpoint ?? 0,
    own_node: drops?.send.own_node ?? 0
  })
  out.byLabel("pilot_tunnel_fragment_drops_total", "counter", "PILF fragments and partial frames dropped, by reason", "reason", {
    duplicate: drops?.fragments.duplicate ?? 0,
    inconsistent: drops?.fragments.inconsistent ?? 0,
    expired: drops?.fragments.expired ?? 0,
    evicted: drops?.fragments.evicted ?? 0
  })
  out.one("pilot_tunnel_pending_discarded_total", "counter", "Queued packets discarded on key-exchange give-up or peer removal", drops?.pending_discarded ?? 0)
  out.byLabel("pilot_tunnel_table_full_total", "counter", "Key exchanges refused because a table was full", "table", {
    sessions: tunnel?.table_full.sessions ?? 0,
    peers: tunnel?.table_full.peers ?? 0
  })

  // The tunnel's UDP socket.
  out.one("pilot_udp_datagrams_received_total", "counter", "Datagrams read from the tunnel socket", udp?.datagramsIn ?? 0)
  out.one("pilot_udp_bytes_received_total", "counter", "Bytes read from the tunnel socket", udp?.bytesIn ?? 0)
  out.one("pilot_udp_datagrams_sent_total", "counter", "Datagrams handed to the tunnel socket", udp?.datagramsOut ?? 0)
  out.one("pilot_udp_bytes_sent_total", "counter", "Bytes handed to the tunnel socket", udp?.bytesOut ?? 0)
  out.one("pilot_udp_send_queue_drops_total", "counter", "Datagrams dropped because the send queue was full", udp?.sendQueueDrops ?? 0)
  out.one("pilot_udp_send_errors_total", "counter", "Write batches in which the OS refused a datagram", udp?.sendErrors ?? 0)
  out.one("pilot_udp_receive_drops_total", "counter", "Datagrams dropped by the socket's receive buffer", udp?.receiveDrops ?? 0)

  // Transport.
  let retransmits = 0
  let fastRetransmits = 0
  let unacked = 0
  for (const c of s.plane?.connections ?? []) {
    retransmits += c.retransmits
    fastRetransmits += c.fast_retx
    unacked += c.unacked
  }
  out.one("pilot_transport_connections", "gauge", "Stream connections open now", transport?.connections ?? 0)
  out.one("pilot_transport_accept_queue_drops_total", "counter", "Incoming connections dropped because an accept queue was full", transport?.acceptQueueDrops ?? 0)
  out.one("pilot_transport_connection_limit_drops_total", "counter", "Incoming connections refused at the connection limit", transport?.connectionLimitDrops ?? 0)
  out.one("pilot_transport_resets_sent_total", "counter", "Resets sent", transport?.resetsSent ?? 0)
  out.one("pilot_transport_failed_connections_total", "counter", "Connections that ended in failure", transport?.failedConnections ?? 0)
  out.one("pilot_transport_datagrams_received_total", "counter", "Transport datagrams received", transport?.datagramsIn ?? 0)
  out.one("pilot_transport_datagrams_dropped_total", "counter", "Transport datagrams dropped (no binding or a full queue)", transport?.datagramsDropped ?? 0)
  out.one("pilot_transport_consecutive_dial_timeouts", "gauge", "Dials that timed out since the last one that got through", transport?.consecutiveDialTimeouts ?? 0)
  out.one("pilot_transport_open_connection_retransmits", "gauge", "Timer retransmissions of the connections open now (summed)", retransmits)
  out.one("pilot_transport_open_connection_fast_retransmits", "gauge", "ACK-clocked retransmissions of the connections open now (summed)", fastRetransmits)
  out.one("pilot_transport_unacked_segments", "gauge", "Segments sent and not yet acknowledged, over open connections", unacked)

  // IPC.
  const ipc = input.ipc
  if (ipc !== undefined) {
    out.one("pilot_ipc_clients", "gauge", "IPC clients connected now", ipc.clients)
    out.one("pilot_ipc_clients_refused_total", "counter", "IPC clients refused at the client limit", ipc.clientsRefused)
    out.byLabel("pilot_ipc_requests_total", "counter", "IPC requests decoded, by command", "command", ipc.requestsByCommand)
    out.one("pilot_ipc_requests_in_flight", "gauge", "IPC requests running in their own fiber now", ipc.requestsInFlight)
    out.one("pilot_ipc_request_failures_total", "counter", "IPC requests whose handler died (contained)", ipc.requestFailures)
    out.one("pilot_ipc_write_timeouts_total", "counter", "IPC clients disconnected because a write overran its deadline", ipc.writeTimeouts)
    out.one("pilot_ipc_bad_frames_total", "counter", "IPC frames that could not be decoded", ipc.badFrames)
    out.one("pilot_ipc_send_queue_high_water", "gauge", "The deepest any IPC client's send queue has been", ipc.sendQueueHighWater)
  }

  // Receive watchdog.
  const w = input.watchdog
  if (w !== undefined) {
    out.one("pilot_rx_watchdog_wedged", "gauge", "1 while the receive watchdog sees a wedge", bool(w.wedgedSinceMs !== undefined))
    out.one("pilot_rx_watchdog_soft_recoveries_total", "counter", "Soft recoveries (re-register) requested by the receive watchdog", w.softRecoveriesTotal)
    out.one("pilot_rx_watchdog_suspends_total", "counter", "Host suspends detected (late ticks)", w.suspendsTotal)
    out.one("pilot_rx_watchdog_recent_exits", "gauge", "Watchdog exits in the last 2 hours (persisted across restarts)", w.exitHistoryMs.length)
  }
  return out.text()
}

export interface DaemonProbes {
  readonly health: ProbeReport
  readonly ready: ProbeReport
}

/** `/health` and `/ready` for the daemon, from one snapshot; `details` say what fails. */
export const daemonProbes = (s: DaemonSnapshot): DaemonProbes => {
  const details = healthJson(s)
  const registered = s.session.registered !== undefined
  const dataPlane = s.plane !== undefined
  const notReady = [
    ...(s.accepting ? [] : ["not_accepting"]),
    ...(registered ? [] : ["not_registered"]),
    ...(dataPlane ? [] : ["data_plane_not_running"])
  ]
  return {
    health: { ok: s.accepting, details: { ...details, ...(s.accepting ? {} : { failing: ["not_accepting"] }) } },
    ready: { ok: notReady.length === 0, details: { ...details, data_plane: dataPlane, ...(notReady.length === 0 ? {} : { failing: notReady }) } }
  }
}

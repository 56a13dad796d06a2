/**
 * The daemon's status replies (reference §9): `Health` (cheap, and never touches the registry) and `Info`
 * (everything an operator asks `pilotctl info` for). Pure: built from a snapshot of live state taken by the
 * caller, with the time as an input.
 *
 * Beyond the reference fields, both carry our two separate states (DESIGN.md §4 rule 3): `accepting` (the UDP
 * and IPC sockets are bound and served) and `registered` (the registry has confirmed our entry). Before the
 * first registration there is no data plane yet: traffic figures are zero and `node_id` is 0.
 */
import type { WebhookStats } from "../events/webhook.ts"
import { formatAddr } from "../protocol/address.ts"
import type { ConnectionInfo, TransportStats } from "../transport/transport.ts"
import type { TunnelStats } from "../tunnel/tunnel-stats.ts"
import type { RegistrySessionState } from "./registry-session.ts"

export interface DaemonSnapshot {
  readonly nowMs: number
  readonly startedMs: number
  readonly accepting: boolean
  readonly session: RegistrySessionState
  /** The UDP endpoint peers reach us on, as registered (`:port` until the registry fills in the host). */
  readonly endpoint: string
  readonly hostname: string | undefined
  readonly version: string
  /** Where identity, trust, inbox/ and received/ live (the directory of the identity file). */
  readonly dataDirectory: string
  /** Trust handshake requests waiting for a local decision (0 until the trust service runs). */
  readonly trustPending: number
  /** The webhook's counters, when one is configured. */
  readonly webhook?: WebhookStats | undefined
  /** Present once the data plane runs. */
  readonly plane: {
    readonly tunnel: TunnelStats
    readonly transport: TransportStats
    readonly connections: ReadonlyArray<ConnectionInfo>
  } | undefined
}

export const uptimeSeconds = (s: DaemonSnapshot): number => Math.max(0, Math.floor((s.nowMs - s.startedMs) / 1000))

const traffic = (s: DaemonSnapshot) => {
  const tunnel = s.plane?.tunnel
  return {
    connections: s.plane?.transport.connections ?? 0,
    peers: tunnel?.peers ?? 0,
    encrypted_peers: tunnel?.encrypted_peers ?? 0,
    authenticated_peers: tunnel?.authenticated_peers ?? 0,
    bytes_sent: tunnel?.bytes_sent ?? 0,
    bytes_recv: tunnel?.bytes_recv ?? 0,
    relay_peer_count: tunnel?.relay_peer_count ?? 0,
    beacon_addr: tunnel?.beacon_addr ?? "",
    webhook_queue_dropped: s.webhook?.webhook_queue_dropped ?? 0,
    webhook_circuit_skips: s.webhook?.webhook_circuit_skips ?? 0
  }
}

const states = (s: DaemonSnapshot) => ({
  accepting: s.accepting,
  registered: s.session.registered !== undefined,
  registry_consecutive_failures: s.session.consecutiveFailures,
  ...(s.session.lastError === undefined ? {} : { registry_last_error: s.session.lastError })
})

export const healthJson = (s: DaemonSnapshot) => ({
  status: "ok",
  uptime_seconds: uptimeSeconds(s),
  ...traffic(s),
  handshake_pending_count: s.trustPending,
  accept_queue_drops: s.plane?.transport.acceptQueueDrops ?? 0,
  ...states(s)
})

export const infoJson = (s: DaemonSnapshot) => {
  const tunnel = s.plane?.tunnel
  return {
    node_id: s.session.registered?.nodeId ?? 0,
    address: s.session.registered?.address ?? "",
    endpoint: s.endpoint,
    public_endpoint: tunnel?.public_endpoint ?? "",
    hostname: s.hostname ?? "",
    uptime_secs: uptimeSeconds(s),
    ...traffic(s),
    pkts_sent: tunnel?.pkts_sent ?? 0,
    pkts_recv: tunnel?.pkts_recv ?? 0,
    tunnel_encryption_success: tunnel?.tunnel_encryption_success ?? 0,
    tunnel_encryption_failure: tunnel?.tunnel_encryption_failure ?? 0,
    handshake_pending_count: tunnel?.handshake_pending_count ?? 0,
    encrypt: true,
    version: s.version,
    data_dir: s.dataDirectory,
    peer_list: tunnel?.peer_list ?? [],
    beacon: tunnel?.beacon ?? {},
    tunnel_drops: tunnel?.drops ?? {},
    conn_list: (s.plane?.connections ?? []).map((c) => ({ ...c, remote_addr: formatAddr(c.remote_addr) })),
    ...states(s)
  }
}

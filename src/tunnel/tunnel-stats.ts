/**
 * What the tunnel shell counts, and the snapshot `Tunnel.stats()` returns.
 *
 * The names of the snapshot's top-level fields follow the daemon's Info JSON (reference §9: `pkts_sent`,
 * `tunnel_encryption_success`, `encrypted_peers`, `peer_list[{node_id, endpoint, encrypted, authenticated,
 * relay}]`…), so the IPC layer can copy them across without a mapping table. Every drop a remote party can
 * cause has its own counter (DESIGN.md §4 rule 8): those are what an operator reads when a peer "does not
 * work", because none of them is logged above Debug per datagram.
 *
 * The counters are plain mutable fields, bumped synchronously on the datagram hot path (no Effect, no
 * allocation); `snapshotStats` copies them.
 */
import type { UdpStats } from "../net/udp-endpoint.ts"
import { type BeaconCounters, makeBeaconCounters } from "./beacon-link.ts"
import type { ReassemblyDrops } from "../protocol/fragment.ts"
import type { PacketDropReason } from "./key-exchange.ts"
import type { PeerTable } from "./peer-table.ts"
import type { RegistryKeyRejection } from "./peer-keys.ts"

/** Why the shell itself dropped an outgoing packet (the core's reasons are `PacketDropReason`). */
export type ShellSendDropReason =
  /** The UDP send queue was full. */
  | "send_queue_full"
  /** No session or no address to send to when the core released the packet. */
  | "no_endpoint"
  /** Sending to ourselves through the tunnel is a caller bug. */
  | "own_node"

/** Why `send` did not hand a packet to the socket (beyond "queued while the key exchange runs"). */
export type SendDropReason = PacketDropReason | ShellSendDropReason

/** Why a key-exchange frame was refused before it reached the key-exchange core. */
export type KxRejection = RegistryKeyRejection | "bad_signature" | "own_node"

export interface TunnelCounters {
  pkts_sent: number
  bytes_sent: number
  pkts_recv: number
  bytes_recv: number
  /** PILS frames whose AEAD tag verified. */
  tunnel_encryption_success: number
  /** PILS frames whose AEAD tag did not verify (forged, corrupted, or sealed under a key we no longer hold). */
  tunnel_encryption_failure: number
  sessions_installed: number
  sessions_dropped: number
  /** Monotonic milliseconds of the last datagram of any kind (the rx watchdog's `LastRecvNano`). */
  last_recv_ms: number | undefined
  keepalives_sent: number
  kx_sent: number
  kx_accepted: number
  registry_lookups: number
  registry_lookup_failures: number
  endpoint_lookups: number
  endpoint_lookup_failures: number
  fragments_sent: number
  frames_reassembled: number
  /** Path probes sent directly to relayed peers, and peers' probes we answered. */
  path_probes_sent: number
  path_probes_answered: number
  drops: {
    /** Datagrams whose magic is none of ours (or too short to have one). */
    unknown_magic: number
    /** Tunnel frames that failed to decode (wrong length, bad PILF header, PILF inside PILF). */
    malformed: number
    /** PILT: plaintext frames, refused because encryption is always on. */
    plaintext: number
    /** Beacon messages refused: no beacon configured, not from our beacon, malformed, or not meant for a node. */
    beacon: number
    /** PILP NAT punches (nothing to do: the datagram itself opened the NAT). */
    punch: number
    /** PILS from a node we hold no session for (the core answers with a rate-limited key request). */
    no_session: number
    replay: number
    outside_window: number
    /** Rejected by an older epoch's window or from a retired epoch (feeds no drop gate). */
    stale_epoch: number
    /** Decrypted packets whose inner source is not the authenticated sender. */
    spoofed_source: number
    /** Decrypted plaintext that is not a valid packet (bad CRC, length): the peer's bug, not ours. */
    inner_malformed: number
    /** Key-exchange frames over the per-source-IP rate. */
    kx_rate_limited: number
    /** Key-exchange frames refused because the KX worker's queue was full. */
    kx_queue_full: number
    kx_rejected: Record<KxRejection, number>
    /** Outgoing packets the shell dropped (the snapshot adds the core's reasons, counted by the table). */
    send: Record<ShellSendDropReason, number>
  }
}

export const makeTunnelCounters = (): TunnelCounters => ({
  pkts_sent: 0,
  bytes_sent: 0,
  pkts_recv: 0,
  bytes_recv: 0,
  tunnel_encryption_success: 0,
  tunnel_encryption_failure: 0,
  sessions_installed: 0,
  sessions_dropped: 0,
  last_recv_ms: undefined,
  keepalives_sent: 0,
  kx_sent: 0,
  kx_accepted: 0,
  registry_lookups: 0,
  registry_lookup_failures: 0,
  endpoint_lookups: 0,
  endpoint_lookup_failures: 0,
  fragments_sent: 0,
  frames_reassembled: 0,
  path_probes_sent: 0,
  path_probes_answered: 0,
  drops: {
    unknown_magic: 0,
    malformed: 0,
    plaintext: 0,
    beacon: 0,
    punch: 0,
    no_session: 0,
    replay: 0,
    outside_window: 0,
    stale_epoch: 0,
    spoofed_source: 0,
    inner_malformed: 0,
    kx_rate_limited: 0,
    kx_queue_full: 0,
    kx_rejected: { registry_key_unavailable: 0, registry_key_mismatch: 0, bad_signature: 0, own_node: 0 },
    send: { send_queue_full: 0, no_endpoint: 0, own_node: 0 }
  }
})

/** One entry of the Info JSON `peer_list`. */
export interface TunnelPeerInfo {
  readonly node_id: number
  /** `host:port` as last learned or resolved; absent while unknown. */
  readonly endpoint: string | undefined
  readonly encrypted: boolean
  readonly authenticated: boolean
  readonly relay: boolean
}

type DeepReadonly<T> = { readonly [K in keyof T]: T[K] extends object ? DeepReadonly<T[K]> : T[K] }

export type TunnelStats = DeepReadonly<Omit<TunnelCounters, "drops">> & {
  readonly drops: DeepReadonly<Omit<TunnelCounters["drops"], "send">> & {
    /** Outgoing packets refused by `send`, the core's reasons and the shell's. */
    readonly send: Readonly<Record<SendDropReason, number>>
    /** Rejected PILF fragments and partial frames given up on (the reassembler's counters). */
    readonly fragments: ReassemblyDrops
    /** Queued packets discarded on give-up or peer removal (the core's `DropPending`). */
    readonly pending_discarded: number
  }
  /** Peers held by the table: with a session, waiting for a key, or cooling down. */
  readonly peers: number
  readonly encrypted_peers: number
  readonly authenticated_peers: number
  /** Peers with a key exchange sent and unanswered. */
  readonly handshake_pending_count: number
  /** Key exchanges refused because a table was full (the core's `RejectTableFull`). */
  readonly table_full: { readonly sessions: number; readonly peers: number }
  /** Peers whose traffic goes through the beacon relay. */
  readonly relay_peer_count: number
  /** The beacon (`host:port`), empty without one. */
  readonly beacon_addr: string
  /** Our endpoint as the beacon last saw it, empty until it answered. */
  readonly public_endpoint: string
  readonly beacon: Readonly<BeaconCounters>
  readonly udp: UdpStats
  readonly peer_list: ReadonlyArray<TunnelPeerInfo>
}

/** Facts the snapshot needs from the shell besides the counters. */
export interface StatsSources {
  readonly counters: TunnelCounters
  readonly table: PeerTable
  readonly reassemblyDrops: ReassemblyDrops
  readonly udp: UdpStats
  /** The address the shell sends to for a node, when it knows one the core has not learned. */
  readonly sendAddressOf: (nodeId: number) => string | undefined
  readonly beacon: { readonly addr: string; readonly counters: BeaconCounters; readonly publicEndpoint: string | undefined } | undefined
}

export const snapshotStats = (sources: StatsSources): TunnelStats => {
  const { counters, table } = sources
  const peerList: Array<TunnelPeerInfo> = []
  let authenticated = 0
  let pending = 0
  let relayedPeers = 0
  for (const [nodeId, peer] of table.entries()) {
    const session = peer.session
    if (session?.authenticated === true) authenticated++
    if (peer.rekey !== undefined) pending++
    if (peer.relay) relayedPeers++
    peerList.push({
      node_id: nodeId,
      endpoint: peer.endpoint ?? sources.sendAddressOf(nodeId),
      encrypted: session !== undefined,
      authenticated: session?.authenticated ?? false,
      relay: peer.relay
    })
  }
  const drops = counters.drops
  return {
    ...counters,
    drops: {
      ...drops,
      kx_rejected: { ...drops.kx_rejected },
      fragments: sources.reassemblyDrops,
      send: { ...table.counters.packetDrops, ...drops.send },
      pending_discarded: table.counters.pendingDiscarded
    },
    peers: table.size,
    encrypted_peers: table.sessions,
    authenticated_peers: authenticated,
    handshake_pending_count: pending,
    table_full: { ...table.counters.tableFull },
    relay_peer_count: relayedPeers,
    beacon_addr: sources.beacon?.addr ?? "",
    public_endpoint: sources.beacon?.publicEndpoint ?? "",
    beacon: { ...(sources.beacon?.counters ?? makeBeaconCounters()) },
    udp: sources.udp,
    peer_list: peerList
  }
}

/**
 * The beacon's decisions (reference §7), as a pure core: no socket, no clock (time is an argument), no logging.
 * The shell (beacon.ts) feeds it every datagram with its source and the current time, sends what it returns,
 * and calls `sweep` and `gossip` on timers.
 *
 * State, every map bounded (DESIGN.md §4 rule 8), each overflow counted:
 * - Local nodes: node ID → the UDP endpoint the node was last seen from, refreshed by Discover and PunchRequest
 *   (node 0 is an anonymous probe: answered, never recorded). An entry lives `nodeTtlMs` (10 min, the
 *   reference's) after its last refresh. The Map is kept in refresh order, so expiry sweeps from the front and
 *   stops at the first live entry. Past `maxNodes`, the least recently refreshed node is evicted: a live daemon
 *   re-Discovers periodically and comes back, while refusing newcomers would let a flood of fake IDs lock every
 *   real node out for ten minutes.
 * - Peer beacons: the set the shell installs (`setPeers`: static `--peers` ∪ the registry's `beacon_list`).
 *   Only a datagram from one of those addresses may gossip (Sync) or have its relays treated as beacon traffic.
 * - Ownership: node ID → the peer beacon whose Sync listed it, expiring `ownershipTtlMs` (3 gossip intervals)
 *   after the last Sync that listed it; bounded by `maxOwnership` (overflow: the new entry is refused and counted —
 *   the table drains by expiry within one TTL).
 * - Token buckets per source IP for punch requests, relays and Discover (limits/token-bucket.ts, bounded keys).
 *
 * Relay rules: a Relay from a node goes to the destination's endpoint as RelayDeliver if the destination is
 * local, else unchanged (the same bytes) to the peer beacon that gossiped it, else it is dropped (`not_found`).
 * A Relay arriving from a peer beacon is delivered locally or dropped, never forwarded again, so two beacons
 * that disagree about ownership cannot bounce a frame between them. A Relay refreshes its sender's entry only
 * when it comes from the endpoint already recorded for that sender: relays never move a mapping.
 *
 * Trust, stated: Discover and PunchRequest are unauthenticated (as in the reference without its newer signed
 * trailers), so whoever sends Discover(X) from elsewhere moves X's mapping — relayed frames are end-to-end
 * encrypted tunnel frames, so the worst this buys is a denial of service for X until X re-Discovers.
 *
 * The core is generic in the address type `A` (the shell uses Effect's `InetAddress`, tests plain objects): an
 * `AddressAdapter` gives each address a string key and its endpoint for DiscoverReply/PunchCommand.
 */
import { type BeaconMessage, decodeBeaconMessage, encodeBeaconMessage, type UdpEndpoint } from "../protocol/beacon.ts"
import { type TokenBucketConfig, TokenBuckets } from "../limits/token-bucket.ts"

export interface AddressAdapter<A> {
  /** A stable identity of the address (the same IP and port give the same key). */
  readonly key: (address: A) => string
  /** The address as a beacon-wire endpoint. */
  readonly endpoint: (address: A) => UdpEndpoint
  /** The source IP alone, the key of the per-source rate limits. */
  readonly ip: (address: A) => string
}

export interface BeaconCoreConfig {
  readonly beaconId: number
  /** Default 10 minutes (reference). */
  readonly nodeTtlMs?: number
  /** Default 500 000 (reference). */
  readonly maxNodes?: number
  /** Default 30 s: three gossip intervals. */
  readonly ownershipTtlMs?: number
  /** Default 500 000. */
  readonly maxOwnership?: number
  /** Peer beacons held at once. Default 256. */
  readonly maxPeers?: number
  /** Per source IP. Default burst 20, 10/s. */
  readonly punchLimit?: Partial<TokenBucketConfig>
  /** Per source IP, counted in frames. Default burst 4096, 4096/s. */
  readonly relayLimit?: Partial<TokenBucketConfig>
  /** Per source IP. Default burst 50, 20/s. */
  readonly discoverLimit?: Partial<TokenBucketConfig>
  /** Largest Sync datagram we send. Default 1200 bytes. */
  readonly maxSyncBytes?: number
}

export interface Outgoing<A> {
  readonly to: A
  readonly bytes: Uint8Array
}

/** Something the operator should hear about at Info (the shell logs these). */
export type BeaconEvent =
  | { readonly _tag: "PeerHeard"; readonly peer: string; readonly beaconId: number; readonly nodes: number }
  | { readonly _tag: "PeerSilent"; readonly peer: string; readonly beaconId: number | undefined }
  /** A Sync from a beacon we do not list yet (it may have registered since our last `beacon_list`). */
  | { readonly _tag: "UnknownPeerSynced"; readonly peer: string }

export const MESSAGE_TYPES = ["discover", "discover_reply", "punch_request", "punch_command", "relay", "relay_deliver", "sync", "notify"] as const
export type MessageTypeName = (typeof MESSAGE_TYPES)[number]

const typeName: Record<BeaconMessage["_tag"], MessageTypeName> = {
  Discover: "discover",
  DiscoverReply: "discover_reply",
  PunchRequest: "punch_request",
  PunchCommand: "punch_command",
  Relay: "relay",
  RelayDeliver: "relay_deliver",
  Sync: "sync",
  Notify: "notify"
}

/** Why a datagram (or part of one) was dropped. */
export const DROP_REASONS = [
  "malformed", // not a decodable beacon message
  "tunnel_frame", // first byte ≥ 0x10: a tunnel frame sent to a beacon
  "unexpected", // a beacon→node message (DiscoverReply, PunchCommand, RelayDeliver, Notify) arriving at a beacon
  "discover_rate_limited",
  "punch_rate_limited",
  "punch_invalid", // requester 0, or requester = target
  "punch_target_unknown",
  "sync_unknown_source", // Sync from an address that is not a peer beacon
  "sync_own_id", // Sync carrying our own beacon ID (our own address listed as a peer)
  "relay_from_unknown_sender" // a Relay whose sender ID is 0
] as const
export type DropReason = (typeof DROP_REASONS)[number]

export const RELAY_DROP_REASONS = ["not_found", "rate_limited", "peer_not_local"] as const
export type RelayDropReason = (typeof RELAY_DROP_REASONS)[number]

export interface BeaconCounters {
  readonly messages: Record<MessageTypeName, number>
  readonly drops: Record<DropReason, number>
  readonly relayDelivered: number
  readonly relayForwarded: number
  readonly relayDropped: Record<RelayDropReason, number>
  readonly discoverReplies: number
  readonly punchCommands: number
  readonly syncsSent: number
  readonly syncsReceived: number
  /** Nodes evicted because the node table was full. */
  readonly nodeEvictions: number
  /** Ownership entries refused because the ownership table was full. */
  readonly ownershipOverflow: number
  /** Peer beacons refused because the peer table was full. */
  readonly peerOverflow: number
  /** Keys dropped by the token-bucket tables to stay within their caps. */
  readonly rateLimitEvictions: number
}

export interface BeaconStats extends BeaconCounters {
  readonly nodes: number
  readonly peers: number
  readonly ownedByPeers: number
}

interface NodeEntry<A> {
  address: A
  key: string
  seenMs: number
}

interface PeerEntry<A> {
  readonly address: A
  beaconId: number | undefined
  lastSyncMs: number | undefined
  /** Whether the peer has been reported silent since its last Sync. */
  silent: boolean
}

interface Ownership {
  peer: string
  expiresMs: number
}

const zeroes = <K extends string>(keys: ReadonlyArray<K>): Record<K, number> =>
  Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>

const SYNC_HEADER_BYTES = 7
const ID_BYTES = 4

export class BeaconState<A> {
  readonly beaconId: number
  readonly #adapter: AddressAdapter<A>
  readonly #nodeTtlMs: number
  readonly #maxNodes: number
  readonly #ownershipTtlMs: number
  readonly #maxOwnership: number
  readonly #maxPeers: number
  readonly #syncNodesPerDatagram: number
  readonly #punchBuckets: TokenBuckets<string>
  readonly #relayBuckets: TokenBuckets<string>
  readonly #discoverBuckets: TokenBuckets<string>
  // Both Maps are kept in refresh order (delete + set on refresh), so sweeps stop at the first live entry.
  readonly #nodes = new Map<number, NodeEntry<A>>()
  readonly #owners = new Map<number, Ownership>()
  readonly #peers = new Map<string, PeerEntry<A>>()
  #events: Array<BeaconEvent> = []
  readonly #c = {
    messages: zeroes(MESSAGE_TYPES),
    drops: zeroes(DROP_REASONS),
    relayDelivered: 0,
    relayForwarded: 0,
    relayDropped: zeroes(RELAY_DROP_REASONS),
    discoverReplies: 0,
    punchCommands: 0,
    syncsSent: 0,
    syncsReceived: 0,
    nodeEvictions: 0,
    ownershipOverflow: 0,
    peerOverflow: 0
  }

  constructor(config: BeaconCoreConfig, adapter: AddressAdapter<A>) {
    if (!(Number.isInteger(config.beaconId) && config.beaconId > 0 && config.beaconId <= 0xffffffff)) {
      throw new RangeError(`beacon ID ${config.beaconId} is not a non-zero u32`)
    }
    this.beaconId = config.beaconId
    this.#adapter = adapter
    this.#nodeTtlMs = config.nodeTtlMs ?? 10 * 60_000
    this.#maxNodes = config.maxNodes ?? 500_000
    this.#ownershipTtlMs = config.ownershipTtlMs ?? 30_000
    this.#maxOwnership = config.maxOwnership ?? 500_000
    this.#maxPeers = config.maxPeers ?? 256
    const maxSyncBytes = config.maxSyncBytes ?? 1200
    this.#syncNodesPerDatagram = Math.max(1, Math.floor((maxSyncBytes - SYNC_HEADER_BYTES) / ID_BYTES))
    const buckets = (given: Partial<TokenBucketConfig> | undefined, burst: number, perSecond: number) =>
      new TokenBuckets<string>({ burst, perSecond, maxKeys: 65_536, ...given })
    this.#punchBuckets = buckets(config.punchLimit, 20, 10)
    this.#relayBuckets = buckets(config.relayLimit, 4096, 4096)
    this.#discoverBuckets = buckets(config.discoverLimit, 50, 20)
  }

  // -------------------------------------------------------------------------------------------------------
  // Inputs

  /** Decides what to do with one datagram from `from` at `nowMs`; returns the datagrams to send. */
  receive(bytes: Uint8Array, from: A, nowMs: number): ReadonlyArray<Outgoing<A>> {
    if (bytes.byteLength > 0 && bytes[0]! >= 0x10) return this.#drop("tunnel_frame")
    const decoded = decodeBeaconMessage(bytes)
    if (decoded._tag === "Failure") return this.#drop("malformed")
    const message = decoded.success
    this.#c.messages[typeName[message._tag]]++
    switch (message._tag) {
      case "Discover":
        return this.#discover(message.node, from, nowMs)
      case "PunchRequest":
        return this.#punch(message.requester, message.target, from, nowMs)
      case "Relay":
        return this.#relay(message.sender, message.dest, message.frame, bytes, from, nowMs)
      case "Sync":
        return this.#sync(message.beaconId, message.nodes, from, nowMs)
      case "DiscoverReply":
      case "PunchCommand":
      case "RelayDeliver":
      case "Notify":
        return this.#drop("unexpected")
    }
  }

  /**
   * Installs the peer beacons (static ∪ listed). Peers no longer in the set are forgotten with their ownership
   * entries (lazily: lookups check that the owner is still a peer). Our own address is the caller's to exclude.
   */
  setPeers(addresses: ReadonlyArray<A>): void {
    const wanted = new Map<string, A>()
    for (const address of addresses) wanted.set(this.#adapter.key(address), address)
    for (const key of [...this.#peers.keys()]) if (!wanted.has(key)) this.#peers.delete(key)
    for (const [key, address] of wanted) {
      if (this.#peers.has(key)) continue
      if (this.#peers.size >= this.#maxPeers) {
        this.#c.peerOverflow++
        continue
      }
      this.#peers.set(key, { address, beaconId: undefined, lastSyncMs: undefined, silent: false })
    }
  }

  /** Expires quiet nodes and ownership entries, notes silent peers, prunes idle rate-limit buckets. */
  sweep(nowMs: number): void {
    for (const [id, entry] of this.#nodes) {
      if (entry.seenMs + this.#nodeTtlMs > nowMs) break
      this.#nodes.delete(id)
    }
    for (const [id, owner] of this.#owners) {
      if (owner.expiresMs > nowMs) break
      this.#owners.delete(id)
    }
    for (const [key, peer] of this.#peers) {
      if (!peer.silent && peer.lastSyncMs !== undefined && peer.lastSyncMs + this.#ownershipTtlMs <= nowMs) {
        peer.silent = true
        this.#events.push({ _tag: "PeerSilent", peer: key, beaconId: peer.beaconId })
      }
    }
    this.#punchBuckets.prune(nowMs)
    this.#relayBuckets.prune(nowMs)
    this.#discoverBuckets.prune(nowMs)
  }

  /** Our Sync to every peer beacon: the live local nodes, chunked to stay within `maxSyncBytes` per datagram. */
  gossip(nowMs: number): ReadonlyArray<Outgoing<A>> {
    if (this.#peers.size === 0) return []
    const live: Array<number> = []
    for (const [id, entry] of this.#nodes) if (this.#isLive(entry, nowMs)) live.push(id)
    const chunks: Array<Uint8Array> = []
    for (let i = 0; i < live.length; i += this.#syncNodesPerDatagram) {
      chunks.push(encodeBeaconMessage({ _tag: "Sync", beaconId: this.beaconId, nodes: live.slice(i, i + this.#syncNodesPerDatagram) }))
    }
    // An empty Sync still tells the peer we are alive.
    if (chunks.length === 0) chunks.push(encodeBeaconMessage({ _tag: "Sync", beaconId: this.beaconId, nodes: [] }))
    const out: Array<Outgoing<A>> = []
    for (const peer of this.#peers.values()) for (const bytes of chunks) out.push({ to: peer.address, bytes })
    this.#c.syncsSent += out.length
    return out
  }

  /** Events since the last call (peer beacons heard for the first time or gone silent). */
  takeEvents(): ReadonlyArray<BeaconEvent> {
    const events = this.#events
    this.#events = []
    return events
  }

  // -------------------------------------------------------------------------------------------------------
  // Views

  /** The endpoint recorded for a live local node. */
  endpointOf(node: number, nowMs: number): A | undefined {
    const entry = this.#nodes.get(node)
    return entry !== undefined && this.#isLive(entry, nowMs) ? entry.address : undefined
  }

  /** The peer beacon (its key) that owns `node`, if a live gossip says so. */
  ownerOf(node: number, nowMs: number): string | undefined {
    return this.#owner(node, nowMs)?.key
  }

  /** Keys of the peer beacons installed. */
  peers(): ReadonlyArray<string> {
    return [...this.#peers.keys()]
  }

  isPeer(address: A): boolean {
    return this.#peers.has(this.#adapter.key(address))
  }

  stats(): BeaconStats {
    const c = this.#c
    return {
      messages: { ...c.messages },
      drops: { ...c.drops },
      relayDelivered: c.relayDelivered,
      relayForwarded: c.relayForwarded,
      relayDropped: { ...c.relayDropped },
      discoverReplies: c.discoverReplies,
      punchCommands: c.punchCommands,
      syncsSent: c.syncsSent,
      syncsReceived: c.syncsReceived,
      nodeEvictions: c.nodeEvictions,
      ownershipOverflow: c.ownershipOverflow,
      peerOverflow: c.peerOverflow,
      rateLimitEvictions: this.#punchBuckets.evictions + this.#relayBuckets.evictions + this.#discoverBuckets.evictions,
      nodes: this.#nodes.size,
      peers: this.#peers.size,
      ownedByPeers: this.#owners.size
    }
  }

  // -------------------------------------------------------------------------------------------------------
  // Decisions

  #drop(reason: DropReason): ReadonlyArray<Outgoing<A>> {
    this.#c.drops[reason]++
    return []
  }

  #isLive(entry: NodeEntry<A>, nowMs: number): boolean {
    return entry.seenMs + this.#nodeTtlMs > nowMs
  }

  #owner(node: number, nowMs: number): { readonly key: string; readonly peer: PeerEntry<A> } | undefined {
    const owner = this.#owners.get(node)
    if (owner === undefined || owner.expiresMs <= nowMs) return undefined
    const peer = this.#peers.get(owner.peer)
    return peer === undefined ? undefined : { key: owner.peer, peer }
  }

  /** Records `node` at `from` (moving it to the back of the refresh order), evicting the oldest if full. */
  #record(node: number, from: A, nowMs: number): void {
    const key = this.#adapter.key(from)
    const existing = this.#nodes.get(node)
    if (existing !== undefined) {
      this.#nodes.delete(node)
      existing.address = from
      existing.key = key
      existing.seenMs = Math.max(existing.seenMs, nowMs)
      this.#nodes.set(node, existing)
      return
    }
    if (this.#nodes.size >= this.#maxNodes) {
      this.sweep(nowMs)
      if (this.#nodes.size >= this.#maxNodes) {
        const oldest = this.#nodes.keys().next()
        if (!oldest.done) {
          this.#nodes.delete(oldest.value)
          this.#c.nodeEvictions++
        }
      }
    }
    this.#nodes.set(node, { address: from, key, seenMs: nowMs })
  }

  #discover(node: number, from: A, nowMs: number): ReadonlyArray<Outgoing<A>> {
    if (!this.#discoverBuckets.take(this.#adapter.ip(from), nowMs)) return this.#drop("discover_rate_limited")
    if (node !== 0) this.#record(node, from, nowMs)
    this.#c.discoverReplies++
    return [{ to: from, bytes: encodeBeaconMessage({ _tag: "DiscoverReply", endpoint: this.#adapter.endpoint(from) }) }]
  }

  #punch(requester: number, target: number, from: A, nowMs: number): ReadonlyArray<Outgoing<A>> {
    if (!this.#punchBuckets.take(this.#adapter.ip(from), nowMs)) return this.#drop("punch_rate_limited")
    if (requester === 0 || requester === target) return this.#drop("punch_invalid")
    this.#record(requester, from, nowMs)
    const targetAddress = this.endpointOf(target, nowMs)
    if (targetAddress === undefined) return this.#drop("punch_target_unknown")
    this.#c.punchCommands += 2
    return [
      { to: from, bytes: encodeBeaconMessage({ _tag: "PunchCommand", endpoint: this.#adapter.endpoint(targetAddress) }) },
      { to: targetAddress, bytes: encodeBeaconMessage({ _tag: "PunchCommand", endpoint: this.#adapter.endpoint(from) }) }
    ]
  }

  #relay(sender: number, dest: number, frame: Uint8Array, datagram: Uint8Array, from: A, nowMs: number): ReadonlyArray<Outgoing<A>> {
    if (!this.#relayBuckets.take(this.#adapter.ip(from), nowMs)) {
      this.#c.relayDropped.rate_limited++
      return []
    }
    const fromPeer = this.isPeer(from)
    if (!fromPeer) {
      if (sender === 0) return this.#drop("relay_from_unknown_sender")
      // Refresh the sender only from the endpoint already recorded for it: relays never move a mapping.
      const known = this.#nodes.get(sender)
      if (known !== undefined && known.key === this.#adapter.key(from)) this.#record(sender, from, nowMs)
    }
    const local = this.endpointOf(dest, nowMs)
    if (local !== undefined) {
      this.#c.relayDelivered++
      return [{ to: local, bytes: encodeBeaconMessage({ _tag: "RelayDeliver", sender, frame }) }]
    }
    if (fromPeer) {
      // Beacon-to-beacon traffic is delivered here or nowhere: never forwarded again (no loops).
      this.#c.relayDropped.peer_not_local++
      return []
    }
    const owner = this.#owner(dest, nowMs)
    if (owner === undefined) {
      this.#c.relayDropped.not_found++
      return []
    }
    this.#c.relayForwarded++
    return [{ to: owner.peer.address, bytes: datagram }]
  }

  #sync(beaconId: number, nodes: ReadonlyArray<number>, from: A, nowMs: number): ReadonlyArray<Outgoing<A>> {
    const key = this.#adapter.key(from)
    const peer = this.#peers.get(key)
    if (peer === undefined) {
      this.#events.push({ _tag: "UnknownPeerSynced", peer: key })
      return this.#drop("sync_unknown_source")
    }
    if (beaconId === this.beaconId) return this.#drop("sync_own_id")
    this.#c.syncsReceived++
    const firstHeard = peer.lastSyncMs === undefined || peer.silent
    peer.beaconId = beaconId
    peer.lastSyncMs = nowMs
    peer.silent = false
    const expiresMs = nowMs + this.#ownershipTtlMs
    for (const node of nodes) {
      if (node === 0) continue
      const existing = this.#owners.get(node)
      if (existing !== undefined) {
        this.#owners.delete(node)
        existing.peer = key
        existing.expiresMs = expiresMs
        this.#owners.set(node, existing)
        continue
      }
      if (this.#owners.size >= this.#maxOwnership) {
        this.#sweepOwners(nowMs)
        if (this.#owners.size >= this.#maxOwnership) {
          this.#c.ownershipOverflow++
          continue
        }
      }
      this.#owners.set(node, { peer: key, expiresMs })
    }
    if (firstHeard) this.#events.push({ _tag: "PeerHeard", peer: key, beaconId, nodes: nodes.length })
    return []
  }

  #sweepOwners(nowMs: number): void {
    for (const [id, owner] of this.#owners) {
      if (owner.expiresMs > nowMs) break
      this.#owners.delete(id)
    }
  }
}

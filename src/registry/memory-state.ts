/**
 * The registry's state held in memory: the pure core of the embedded store. No I/O, no clock (every
 * time-dependent operation takes `nowMs`). Leases expire lazily — every read checks the deadline — so the
 * periodic `reap` only frees memory and hostnames early; correctness never depends on when it runs.
 */
import {
  BEACON_TTL_MS,
  type BeaconEntry,
  type HostnameOutcome,
  INBOX_CAPACITY,
  type Inbox,
  type InboxItem,
  LEASE_MS,
  MAX_NODE_ID,
  type NodeLease,
  type RegisterInput,
  type RegisterOutcome,
  type RotateOutcome,
  trustReportKey,
  type UpdateOutcome
} from "./store.ts"

export interface MemoryLimits {
  /** Node IDs ever bound to a key (each registration of a new key binds one). */
  readonly maxNodes: number
  readonly maxTrustReports: number
  readonly maxBeacons: number
}

export const defaultMemoryLimits: MemoryLimits = { maxNodes: 200_000, maxTrustReports: 1_000_000, maxBeacons: 1024 }

/** What the snapshot file holds. Leases are kept with their `lastSeenMs`, so a restart does not extend them. */
export interface MemorySnapshot {
  readonly nextNodeId: number
  readonly keys: ReadonlyArray<readonly [nodeId: number, publicKey: string]>
  readonly leases: ReadonlyArray<NodeLease>
  readonly trustReports: ReadonlyArray<string>
  readonly inboxes: ReadonlyArray<readonly [nodeId: number, items: ReadonlyArray<InboxItem>]>
}

export class MemoryState {
  readonly #limits: MemoryLimits
  #nextNodeId = 1
  readonly #keyOfNode = new Map<number, string>()
  readonly #nodeOfKey = new Map<string, number>()
  readonly #leases = new Map<number, NodeLease>()
  readonly #nodeOfHostname = new Map<string, number>()
  readonly #trustReports = new Set<string>()
  readonly #inboxes = new Map<number, Array<InboxItem>>()
  readonly #beacons = new Map<number, { entry: BeaconEntry; seenMs: number }>()

  constructor(limits: MemoryLimits = defaultMemoryLimits, snapshot?: MemorySnapshot) {
    this.#limits = limits
    if (snapshot !== undefined) this.#restore(snapshot)
  }

  register(input: RegisterInput): RegisterOutcome {
    let nodeId = this.#nodeOfKey.get(input.publicKey)
    const reclaimed = nodeId !== undefined
    if (nodeId === undefined) {
      if (this.#keyOfNode.size >= this.#limits.maxNodes || this.#nextNodeId > MAX_NODE_ID) return { _tag: "Full" }
      nodeId = this.#nextNodeId++
      this.#keyOfNode.set(nodeId, input.publicKey)
      this.#nodeOfKey.set(input.publicKey, nodeId)
    }
    const previous = this.lease(nodeId, input.nowMs)
    // A re-registration keeps what the node set earlier (hostname, tags, visibility) unless it asks anew.
    let hostname = previous?.hostname
    let hostnameTaken = false
    if (input.hostname !== undefined && input.hostname !== hostname) {
      if (this.#hostnameFree(input.hostname, nodeId, input.nowMs)) hostname = input.hostname
      else hostnameTaken = true
    }
    const lease: NodeLease = {
      nodeId,
      publicKey: input.publicKey,
      realAddr: input.realAddr,
      tags: previous?.tags ?? [],
      public: previous?.public ?? false,
      relayOnly: input.relayOnly,
      lastSeenMs: input.nowMs,
      ...(hostname === undefined ? {} : { hostname }),
      ...(input.owner === undefined ? {} : { owner: input.owner }),
      ...(input.version === undefined ? {} : { version: input.version })
    }
    this.#putLease(lease, previous)
    return { _tag: "Registered", lease, reclaimed, hostnameTaken }
  }

  heartbeat(nodeId: number, nowMs: number): boolean {
    const lease = this.lease(nodeId, nowMs)
    if (lease === undefined) return false
    this.#leases.set(nodeId, { ...lease, lastSeenMs: Math.max(lease.lastSeenMs, nowMs) })
    return true
  }

  lease(nodeId: number, nowMs: number): NodeLease | undefined {
    const lease = this.#leases.get(nodeId)
    if (lease === undefined) return undefined
    if (nowMs - lease.lastSeenMs >= LEASE_MS) {
      this.#dropLease(lease)
      return undefined
    }
    return lease
  }

  nodeIdOfKey(publicKey: string): number | undefined {
    return this.#nodeOfKey.get(publicKey)
  }

  boundKey(nodeId: number): string | undefined {
    return this.#keyOfNode.get(nodeId)
  }

  resolveHostname(hostname: string, nowMs: number): number | undefined {
    const nodeId = this.#nodeOfHostname.get(hostname)
    return nodeId !== undefined && this.lease(nodeId, nowMs)?.hostname === hostname ? nodeId : undefined
  }

  setHostname(nodeId: number, hostname: string, nowMs: number): HostnameOutcome {
    const lease = this.lease(nodeId, nowMs)
    if (lease === undefined) return "not_found"
    if (hostname !== "" && !this.#hostnameFree(hostname, nodeId, nowMs)) return "taken"
    const { hostname: _old, ...rest } = lease
    this.#putLease(hostname === "" ? rest : { ...rest, hostname }, lease)
    return "ok"
  }

  setVisibility(nodeId: number, isPublic: boolean, nowMs: number): UpdateOutcome {
    return this.#update(nodeId, nowMs, (lease) => ({ ...lease, public: isPublic }))
  }

  setTags(nodeId: number, tags: ReadonlyArray<string>, nowMs: number): UpdateOutcome {
    return this.#update(nodeId, nowMs, (lease) => ({ ...lease, tags: [...tags] }))
  }

  deregister(nodeId: number): UpdateOutcome {
    const lease = this.#leases.get(nodeId)
    if (lease === undefined) return "not_found"
    this.#dropLease(lease)
    return "ok"
  }

  rotateKey(nodeId: number, newPublicKey: string): RotateOutcome {
    const oldKey = this.#keyOfNode.get(nodeId)
    if (oldKey === undefined) return "not_found"
    const holder = this.#nodeOfKey.get(newPublicKey)
    if (holder !== undefined && holder !== nodeId) return "key_in_use"
    this.#nodeOfKey.delete(oldKey)
    this.#nodeOfKey.set(newPublicKey, nodeId)
    this.#keyOfNode.set(nodeId, newPublicKey)
    const lease = this.#leases.get(nodeId)
    if (lease !== undefined) this.#leases.set(nodeId, { ...lease, publicKey: newPublicKey })
    return "ok"
  }

  reportTrust(from: number, to: number): "ok" | "full" {
    const key = trustReportKey(from, to)
    if (!this.#trustReports.has(key) && this.#trustReports.size >= this.#limits.maxTrustReports) return "full"
    this.#trustReports.add(key)
    return "ok"
  }

  revokeTrust(a: number, b: number): void {
    this.#trustReports.delete(trustReportKey(a, b))
    this.#trustReports.delete(trustReportKey(b, a))
  }

  hasTrust(a: number, b: number): boolean {
    return this.#trustReports.has(trustReportKey(a, b)) && this.#trustReports.has(trustReportKey(b, a))
  }

  pushInbox(nodeId: number, item: InboxItem): "ok" | "full" {
    const inbox = this.#inboxes.get(nodeId) ?? []
    if (inbox.length >= INBOX_CAPACITY) return "full"
    inbox.push(item)
    this.#inboxes.set(nodeId, inbox)
    return "ok"
  }

  drainInbox(nodeId: number): Inbox {
    const items = this.#inboxes.get(nodeId) ?? []
    this.#inboxes.delete(nodeId)
    return splitInbox(items)
  }

  registerBeacon(entry: BeaconEntry, nowMs: number): "ok" | "full" {
    if (!this.#beacons.has(entry.beaconId)) {
      this.#reapBeacons(nowMs)
      if (this.#beacons.size >= this.#limits.maxBeacons) return "full"
    }
    this.#beacons.set(entry.beaconId, { entry, seenMs: nowMs })
    return "ok"
  }

  listBeacons(nowMs: number): ReadonlyArray<BeaconEntry> {
    this.#reapBeacons(nowMs)
    return [...this.#beacons.values()].map((b) => b.entry)
  }

  nodesOnline(nowMs: number): number {
    this.reap(nowMs)
    return this.#leases.size
  }

  /** Drops expired leases (freeing their hostnames) and beacons; returns the number of leases dropped. */
  reap(nowMs: number): number {
    let dropped = 0
    for (const lease of this.#leases.values()) {
      if (nowMs - lease.lastSeenMs >= LEASE_MS) {
        this.#dropLease(lease)
        dropped++
      }
    }
    this.#reapBeacons(nowMs)
    return dropped
  }

  snapshot(): MemorySnapshot {
    return {
      nextNodeId: this.#nextNodeId,
      keys: [...this.#keyOfNode],
      leases: [...this.#leases.values()],
      trustReports: [...this.#trustReports],
      inboxes: [...this.#inboxes]
    }
  }

  #restore(snapshot: MemorySnapshot): void {
    this.#nextNodeId = snapshot.nextNodeId
    for (const [nodeId, key] of snapshot.keys) {
      this.#keyOfNode.set(nodeId, key)
      this.#nodeOfKey.set(key, nodeId)
    }
    for (const lease of snapshot.leases) this.#putLease(lease, undefined)
    for (const report of snapshot.trustReports) this.#trustReports.add(report)
    for (const [nodeId, items] of snapshot.inboxes) this.#inboxes.set(nodeId, [...items])
  }

  #hostnameFree(hostname: string, nodeId: number, nowMs: number): boolean {
    const holder = this.resolveHostname(hostname, nowMs)
    return holder === undefined || holder === nodeId
  }

  #update(nodeId: number, nowMs: number, f: (lease: NodeLease) => NodeLease): UpdateOutcome {
    const lease = this.lease(nodeId, nowMs)
    if (lease === undefined) return "not_found"
    this.#putLease(f(lease), lease)
    return "ok"
  }

  #putLease(lease: NodeLease, previous: NodeLease | undefined): void {
    if (previous?.hostname !== undefined && previous.hostname !== lease.hostname) {
      this.#nodeOfHostname.delete(previous.hostname)
    }
    if (lease.hostname !== undefined) this.#nodeOfHostname.set(lease.hostname, lease.nodeId)
    this.#leases.set(lease.nodeId, lease)
  }

  #dropLease(lease: NodeLease): void {
    this.#leases.delete(lease.nodeId)
    if (lease.hostname !== undefined && this.#nodeOfHostname.get(lease.hostname) === lease.nodeId) {
      this.#nodeOfHostname.delete(lease.hostname)
    }
  }

  #reapBeacons(nowMs: number): void {
    for (const [id, b] of this.#beacons) if (nowMs - b.seenMs >= BEACON_TTL_MS) this.#beacons.delete(id)
  }
}

export const splitInbox = (items: ReadonlyArray<InboxItem>): Inbox => ({
  requests: items.filter((i): i is Extract<InboxItem, { kind: "request" }> => i.kind === "request"),
  responses: items.filter((i): i is Extract<InboxItem, { kind: "response" }> => i.kind === "response")
})

/**
 * The registry's storage contract. Two implementations keep it: the embedded store (in memory, persisted as
 * a snapshot file) and the Redis store (shared by several registry processes). The same contract test suite
 * runs against both, so the request handlers never know which one they talk to.
 *
 * Model (reference §2, §6):
 * - A node ID is bound to an Ed25519 public key forever: registering the same key again reclaims the same ID,
 *   even after the node's lease expired.
 * - A *lease* is the live part of a node: endpoint, hostname, tags, visibility. Register and heartbeat renew
 *   it; a node silent for `LEASE_MS` is gone (lookup fails, its hostname is free) but its ID stays bound.
 * - Trust is reported per direction (`report_trust` from A about B) and a *trust pair* exists only while both
 *   directions are reported. The reference stores a pair on one report, which lets any node make itself
 *   "trusted" by a private node and then `resolve` its endpoint; requiring both sides closes that hole and
 *   still works with Go daemons, which report on both sides of every grant. A revoke by either side ends
 *   the pair (both directions).
 * - Trust reports and handshake inboxes belong to node IDs, not leases: they survive expiry.
 * Business outcomes (a taken hostname, a full inbox) are values; only a failing backend is an error.
 */
import { Context, type Effect, Schema } from "effect"
import { BROADCAST_NODE } from "../protocol/address.ts"

/** A node silent this long is reaped (reference §6: 3 minutes). */
export const LEASE_MS = 3 * 60_000
/** A beacon that has not re-registered this long is dropped from `beacon_list` (reference §6). */
export const BEACON_TTL_MS = 60_000
/** Queued relayed-handshake items per node (reference §6). */
export const INBOX_CAPACITY = 100

/** The highest node ID a store hands out: the next one is the broadcast address. */
export const MAX_NODE_ID = BROADCAST_NODE - 1

/** A node ID as stores persist it. */
export const StoredNodeId = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: MAX_NODE_ID }))

export interface NodeLease {
  readonly nodeId: number
  readonly publicKey: string
  readonly realAddr: string
  readonly hostname?: string
  readonly tags: ReadonlyArray<string>
  readonly public: boolean
  readonly relayOnly: boolean
  readonly owner?: string
  readonly version?: string
  readonly lastSeenMs: number
}

export interface RegisterInput {
  readonly publicKey: string
  readonly realAddr: string
  /** Already validated by the caller; claimed only if free. */
  readonly hostname?: string
  readonly owner?: string
  readonly version?: string
  readonly relayOnly: boolean
  readonly nowMs: number
}

export type RegisterOutcome =
  | { readonly _tag: "Registered"; readonly lease: NodeLease; readonly reclaimed: boolean; readonly hostnameTaken: boolean }
  | { readonly _tag: "Full" }

export type InboxItem =
  | { readonly kind: "request"; readonly fromNodeId: number; readonly justification: string; readonly signature: string }
  | { readonly kind: "response"; readonly fromNodeId: number; readonly accept: boolean }

/** An inbox item as stores persist it. */
export const StoredInboxItem = Schema.Union([
  Schema.Struct({ kind: Schema.Literal("request"), fromNodeId: StoredNodeId, justification: Schema.String, signature: Schema.String }),
  Schema.Struct({ kind: Schema.Literal("response"), fromNodeId: StoredNodeId, accept: Schema.Boolean })
])

export interface Inbox {
  readonly requests: ReadonlyArray<Extract<InboxItem, { kind: "request" }>>
  readonly responses: ReadonlyArray<Extract<InboxItem, { kind: "response" }>>
}

export interface BeaconEntry {
  readonly beaconId: number
  readonly addr: string
}

export type UpdateOutcome = "ok" | "not_found"
export type HostnameOutcome = UpdateOutcome | "taken"
export type RotateOutcome = UpdateOutcome | "key_in_use"

export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  detail: Schema.String
}) {
  get code(): string {
    return "store_unavailable"
  }
  override get message(): string {
    return `registry store failed during ${this.operation}: ${this.detail}`
  }
}

type Op<A> = Effect.Effect<A, StoreError>

export interface RegistryStoreShape {
  readonly register: (input: RegisterInput) => Op<RegisterOutcome>
  /** Renews a live lease; `false` when the node has none (the daemon then re-registers). */
  readonly heartbeat: (nodeId: number, nowMs: number) => Op<boolean>
  /** The live lease, if any. */
  readonly lease: (nodeId: number, nowMs: number) => Op<NodeLease | undefined>
  /** The node ID a key is bound to, lease or not (known keys are exempt from the registration rate limit). */
  readonly nodeIdOfKey: (publicKey: string) => Op<number | undefined>
  /** The key a node ID is bound to, lease or not (signatures are checked against it). */
  readonly boundKey: (nodeId: number) => Op<string | undefined>
  readonly resolveHostname: (hostname: string, nowMs: number) => Op<number | undefined>
  /** `""` clears the hostname. */
  readonly setHostname: (nodeId: number, hostname: string, nowMs: number) => Op<HostnameOutcome>
  readonly setVisibility: (nodeId: number, isPublic: boolean, nowMs: number) => Op<UpdateOutcome>
  readonly setTags: (nodeId: number, tags: ReadonlyArray<string>, nowMs: number) => Op<UpdateOutcome>
  /** Ends the lease now (hostname freed); the key binding, trust pairs and inbox stay. */
  readonly deregister: (nodeId: number) => Op<UpdateOutcome>
  readonly rotateKey: (nodeId: number, newPublicKey: string) => Op<RotateOutcome>
  /** Records `from`'s report that it trusts `to`; `"full"` when a new report would exceed the store's cap. */
  readonly reportTrust: (from: number, to: number) => Op<"ok" | "full">
  /** Ends the pair between `a` and `b`: both directions' reports are removed. */
  readonly revokeTrust: (a: number, b: number) => Op<void>
  /** Whether both `a` and `b` have reported trusting each other. */
  readonly hasTrust: (a: number, b: number) => Op<boolean>
  /** Appends to a node's inbox; `"full"` past `INBOX_CAPACITY` items. */
  readonly pushInbox: (nodeId: number, item: InboxItem) => Op<"ok" | "full">
  /** Returns and empties a node's inbox. */
  readonly drainInbox: (nodeId: number) => Op<Inbox>
  /** `"full"` when a new beacon would exceed the store's cap. */
  readonly registerBeacon: (beacon: BeaconEntry, nowMs: number) => Op<"ok" | "full">
  readonly listBeacons: (nowMs: number) => Op<ReadonlyArray<BeaconEntry>>
  /** Live leases (a gauge). */
  readonly nodesOnline: (nowMs: number) => Op<number>
}

/** The key of one direction's trust report: `"from>to"`. */
export const trustReportKey = (from: number, to: number): string => `${from}>${to}`

export class RegistryStore extends Context.Service<RegistryStore, RegistryStoreShape>()("pilotfish/registry/RegistryStore") {}

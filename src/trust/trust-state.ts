/**
 * The trust state and its rules (reference §5), as pure functions of (state, input, now): who is trusted, which
 * requests are pending, which outgoing requests and revoke cooldowns are live, and what an incoming handshake
 * message does to them. Every transition returns the new state plus the effects the shell must carry out (send
 * a message, tell the registry, tear a tunnel down, publish an event), in the order they must happen.
 *
 * Times are unix milliseconds supplied by the caller. Expired entries (pending after 30 days, outgoing after
 * 10 minutes, cooldowns after 5 minutes) are pruned by every transition and ignored by every query, so no reaper
 * is needed for correctness.
 *
 * Choices where the reference is silent:
 * - One pending request per peer: a repeated request refreshes the entry (key, justification, time) and is never
 *   refused by the caps. `source` is the node that delivered the request when that is not the requester itself
 *   (a relaying node); the per-source cap counts entries by `source ?? node_id`, so no single delivering node can
 *   fill the queue. A request over a cap is dropped with a `handshake.pending_dropped` event (the shell rate-limits
 *   its log line, §14.10).
 * - `mutual` is true when the peer's side is confirmed: its accept of our request, or its request crossing ours.
 * - A local approve or reject needs a pending request; a local revoke needs a trusted peer (reference: error).
 */
import { Result } from "effect"

export const PENDING_TTL_MS = 30 * 24 * 60 * 60 * 1000
export const OUTGOING_TTL_MS = 10 * 60 * 1000
export const REVOKE_COOLDOWN_MS = 5 * 60 * 1000
export const MAX_PENDING = 256
export const MAX_PENDING_PER_SOURCE = 16
export const MAX_JUSTIFICATION_BYTES = 1024

export interface TrustedPeer {
  readonly node_id: number
  /** Standard base64 of the peer's Ed25519 key. */
  readonly public_key: string
  readonly approved_at: number
  readonly mutual: boolean
  /** The shared network the approval was granted through. */
  readonly network?: number
}

export interface PendingRequest {
  readonly node_id: number
  readonly public_key?: string
  readonly justification?: string
  readonly received_at: number
  /** The node that delivered the request, when not the requester itself. */
  readonly source?: number
}

export interface TrustState {
  readonly trusted: ReadonlyMap<number, TrustedPeer>
  readonly pending: ReadonlyMap<number, PendingRequest>
  /** Outgoing requests: peer → expiry. Not persisted (they die with the process, like their retries). */
  readonly outgoing: ReadonlyMap<number, number>
  /** Revoke cooldowns: peer → until. */
  readonly cooldowns: ReadonlyMap<number, number>
}

export const emptyTrustState: TrustState = {
  trusted: new Map(),
  pending: new Map(),
  outgoing: new Map(),
  cooldowns: new Map()
}

export type GrantReason = "mutual" | "network" | "trusted_agent" | "auto_approve" | "approved" | "accepted"
export type RevokeReason = "revoked" | "peer_revoked"

export type TrustEvent =
  | { readonly name: "handshake.received"; readonly peer: number }
  | { readonly name: "handshake.pending_dropped"; readonly peer: number; readonly cap: "total" | "per_source" }
  | { readonly name: "handshake.auto_approved"; readonly peer: number; readonly reason: GrantReason }
  | { readonly name: "handshake.rejected"; readonly peer: number; readonly by: "local" | "peer" }
  | { readonly name: "trust.changed"; readonly peer: number; readonly state: "granted"; readonly reason: GrantReason }
  | { readonly name: "trust.changed"; readonly peer: number; readonly state: "revoked"; readonly reason: RevokeReason }

export type TrustEffect =
  | { readonly _tag: "SendAccept"; readonly peer: number }
  | { readonly _tag: "SendReject"; readonly peer: number }
  | { readonly _tag: "SendRevoke"; readonly peer: number }
  | { readonly _tag: "TearDownTunnel"; readonly peer: number }
  /** Registry `report_trust`. */
  | { readonly _tag: "ReportTrust"; readonly peer: number }
  /** Registry `revoke_trust`. */
  | { readonly _tag: "RevokeTrust"; readonly peer: number }
  | { readonly _tag: "Publish"; readonly event: TrustEvent }

export interface Transition {
  readonly state: TrustState
  readonly effects: ReadonlyArray<TrustEffect>
  /** Whether the persisted part of the state changed (the shell marks the store dirty). */
  readonly changed: boolean
}

export type TrustRefusal = "no_pending_request" | "no_public_key" | "not_trusted"

export interface TrustPolicy {
  /** The embedded trusted-agents list. */
  readonly trustedAgents: ReadonlySet<number>
  /** Daemon flag `TrustAutoApprove`. */
  readonly autoApprove: boolean
}

export interface IncomingRequest {
  readonly node_id: number
  readonly public_key?: string
  readonly justification?: string
  readonly source?: number
  /** The claimed key matched the registry's key for `node_id`. */
  readonly registryBound: boolean
  /** A non-backbone network both nodes belong to, if any (from the registry). */
  readonly sharedNetwork?: number
}

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

const without = <V>(map: ReadonlyMap<number, V>, key: number): ReadonlyMap<number, V> => {
  if (!map.has(key)) return map
  const copy = new Map(map)
  copy.delete(key)
  return copy
}

const withEntry = <V>(map: ReadonlyMap<number, V>, key: number, value: V): ReadonlyMap<number, V> =>
  new Map(map).set(key, value)

const unexpired = <V>(map: ReadonlyMap<number, V>, isLive: (value: V) => boolean): ReadonlyMap<number, V> => {
  let copy: Map<number, V> | undefined
  for (const [key, value] of map) {
    if (isLive(value)) continue
    copy ??= new Map(map)
    copy.delete(key)
  }
  return copy ?? map
}

const isPendingLive = (now: number) => (request: PendingRequest) => now - request.received_at < PENDING_TTL_MS
const isDeadlineLive = (now: number) => (deadline: number) => deadline > now

/** Drops expired pending requests, outgoing requests and cooldowns. Returns `state` itself when nothing expired. */
export const pruneExpired = (state: TrustState, now: number): TrustState => {
  const pending = unexpired(state.pending, isPendingLive(now))
  const outgoing = unexpired(state.outgoing, isDeadlineLive(now))
  const cooldowns = unexpired(state.cooldowns, isDeadlineLive(now))
  return pending === state.pending && outgoing === state.outgoing && cooldowns === state.cooldowns
    ? state
    : { ...state, pending, outgoing, cooldowns }
}

const publish = (event: TrustEvent): TrustEffect => ({ _tag: "Publish", event })

const unchanged = (state: TrustState, effects: ReadonlyArray<TrustEffect> = []): Transition => ({
  state,
  effects,
  changed: false
})

/** Keeps printable characters (letters, marks, numbers, punctuation, symbols, space) and cuts at 1024 UTF-8 bytes. */
export const sanitizeJustification = (text: string): string => {
  let out = ""
  let bytes = 0
  for (const char of text) {
    if (!PRINTABLE.test(char)) continue
    const size = utf8Length(char.codePointAt(0) ?? 0)
    if (bytes + size > MAX_JUSTIFICATION_BYTES) break
    out += char
    bytes += size
  }
  return out
}
const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u
const utf8Length = (codePoint: number): number =>
  codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4

// ---------------------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------------------

export const isTrusted = (state: TrustState, peer: number): boolean => state.trusted.has(peer)

export const hasLiveOutgoing = (state: TrustState, peer: number, now: number): boolean =>
  (state.outgoing.get(peer) ?? -Infinity) > now

export const inRevokeCooldown = (state: TrustState, peer: number, now: number): boolean =>
  (state.cooldowns.get(peer) ?? -Infinity) > now

// ---------------------------------------------------------------------------------------------------------
// Transitions
// ---------------------------------------------------------------------------------------------------------

/**
 * The one way trust is granted: records the peer, clears its pending and outgoing requests, and asks the shell to
 * publish, send our accept (unless the peer's accept is what granted it) and report the pair to the registry.
 */
const grant = (
  state: TrustState,
  peer: { readonly node_id: number; readonly public_key: string; readonly network?: number },
  reason: GrantReason,
  now: number
): Transition => {
  const trustedPeer: TrustedPeer = {
    node_id: peer.node_id,
    public_key: peer.public_key,
    approved_at: now,
    mutual: reason === "mutual" || reason === "accepted",
    ...(peer.network === undefined ? {} : { network: peer.network })
  }
  const automatic = reason === "mutual" || reason === "network" || reason === "trusted_agent" ||
    reason === "auto_approve"
  return {
    state: {
      ...state,
      trusted: withEntry(state.trusted, peer.node_id, trustedPeer),
      pending: without(state.pending, peer.node_id),
      outgoing: without(state.outgoing, peer.node_id)
    },
    effects: [
      ...(automatic ? [publish({ name: "handshake.auto_approved", peer: peer.node_id, reason })] : []),
      publish({ name: "trust.changed", peer: peer.node_id, state: "granted", reason }),
      ...(reason === "accepted" ? [] : [{ _tag: "SendAccept", peer: peer.node_id } as const]),
      { _tag: "ReportTrust", peer: peer.node_id }
    ],
    changed: true
  }
}

/** Which automatic approval (if any) an authenticated incoming request earns, in the reference's order. */
const automaticGrant = (
  state: TrustState,
  request: IncomingRequest,
  policy: TrustPolicy,
  now: number
): { readonly reason: GrantReason; readonly network?: number } | undefined => {
  if (request.registryBound && hasLiveOutgoing(state, request.node_id, now)) return { reason: "mutual" }
  if (request.registryBound && request.sharedNetwork !== undefined && request.sharedNetwork !== 0) {
    return { reason: "network", network: request.sharedNetwork }
  }
  if (request.registryBound && policy.trustedAgents.has(request.node_id)) return { reason: "trusted_agent" }
  if (policy.autoApprove) return { reason: "auto_approve" }
  return undefined
}

/** An authenticated `handshake_request` (the shell has checked timestamp, key binding, signature and replay). */
export const receiveRequest = (
  current: TrustState,
  request: IncomingRequest,
  policy: TrustPolicy,
  now: number
): Transition => {
  const state = pruneExpired(current, now)
  const peer = request.node_id
  if (isTrusted(state, peer)) return unchanged(state, [{ _tag: "SendAccept", peer }])

  const auto = automaticGrant(state, request, policy, now)
  const key = request.public_key
  if (auto !== undefined && key !== undefined) {
    return grant(state, { node_id: peer, public_key: key, ...(auto.network === undefined ? {} : { network: auto.network }) }, auto.reason, now)
  }

  const justification = request.justification === undefined ? "" : sanitizeJustification(request.justification)
  const entry: PendingRequest = {
    node_id: peer,
    received_at: now,
    ...(key === undefined ? {} : { public_key: key }),
    ...(justification === "" ? {} : { justification }),
    ...(request.source === undefined || request.source === peer ? {} : { source: request.source })
  }
  if (!state.pending.has(peer)) {
    const deliverer = entry.source ?? peer
    let fromDeliverer = 0
    for (const other of state.pending.values()) if ((other.source ?? other.node_id) === deliverer) fromDeliverer++
    const cap = state.pending.size >= MAX_PENDING ? "total" : fromDeliverer >= MAX_PENDING_PER_SOURCE ? "per_source" : undefined
    if (cap !== undefined) return unchanged(state, [publish({ name: "handshake.pending_dropped", peer, cap })])
  }
  return {
    state: { ...state, pending: withEntry(state.pending, peer, entry) },
    effects: [publish({ name: "handshake.received", peer })],
    changed: true
  }
}

/**
 * We are sending a request to `peer`: record it (live for 10 minutes, enabling mutual auto-approval) and clear
 * any revoke cooldown — an explicit handshake means the revoke is over.
 */
export const recordOutgoing = (current: TrustState, peer: number, now: number): Transition => {
  const state = pruneExpired(current, now)
  return {
    state: {
      ...state,
      outgoing: withEntry(state.outgoing, peer, now + OUTGOING_TTL_MS),
      cooldowns: without(state.cooldowns, peer)
    },
    effects: [],
    changed: state.cooldowns.has(peer)
  }
}

/** The operator approves a pending request; `publicKey` supplies a key the request lacked (registry backfill). */
export const approve = (
  current: TrustState,
  peer: number,
  now: number,
  publicKey?: string
): Result.Result<Transition, TrustRefusal> => {
  const state = pruneExpired(current, now)
  const request = state.pending.get(peer)
  if (request === undefined) return Result.fail("no_pending_request")
  const key = publicKey ?? request.public_key
  if (key === undefined) return Result.fail("no_public_key")
  return Result.succeed(grant(state, { node_id: peer, public_key: key }, "approved", now))
}

/** The operator rejects a pending request: it is dropped and the peer told. */
export const reject = (current: TrustState, peer: number, now: number): Result.Result<Transition, TrustRefusal> => {
  const state = pruneExpired(current, now)
  if (!state.pending.has(peer)) return Result.fail("no_pending_request")
  return Result.succeed({
    state: { ...state, pending: without(state.pending, peer) },
    effects: [{ _tag: "SendReject", peer }, publish({ name: "handshake.rejected", peer, by: "local" })],
    changed: true
  })
}

/**
 * The operator revokes a trusted peer: forgotten, 5-minute cooldown (so a stale relayed accept cannot re-trust
 * it), the peer notified before its tunnel goes, then the registry told.
 */
export const revoke = (current: TrustState, peer: number, now: number): Result.Result<Transition, TrustRefusal> => {
  const state = pruneExpired(current, now)
  if (!isTrusted(state, peer)) return Result.fail("not_trusted")
  return Result.succeed({
    state: {
      trusted: without(state.trusted, peer),
      pending: without(state.pending, peer),
      outgoing: without(state.outgoing, peer),
      cooldowns: withEntry(state.cooldowns, peer, now + REVOKE_COOLDOWN_MS)
    },
    effects: [
      { _tag: "SendRevoke", peer },
      { _tag: "TearDownTunnel", peer },
      { _tag: "RevokeTrust", peer },
      publish({ name: "trust.changed", peer, state: "revoked", reason: "revoked" })
    ],
    changed: true
  })
}

/** An authenticated `handshake_accept` from `peer`, carrying (or backfilled with) its key. */
export const receiveAccept = (current: TrustState, peer: number, publicKey: string, now: number): Transition => {
  const state = pruneExpired(current, now)
  if (inRevokeCooldown(state, peer, now)) return unchanged(state)
  const already = state.trusted.get(peer)
  if (already !== undefined && already.mutual && already.public_key === publicKey) return unchanged(state)
  return grant(state, { node_id: peer, public_key: publicKey }, "accepted", now)
}

/** An authenticated `handshake_reject` from `peer`: our outgoing request is over. */
export const receiveReject = (current: TrustState, peer: number, now: number): Transition => {
  const state = pruneExpired(current, now)
  if (!state.outgoing.has(peer)) return unchanged(state)
  return {
    state: { ...state, outgoing: without(state.outgoing, peer) },
    effects: [publish({ name: "handshake.rejected", peer, by: "peer" })],
    changed: false
  }
}

/** An authenticated `handshake_revoke` from `peer`: everything about it goes, its tunnel too. */
export const receiveRevoke = (current: TrustState, peer: number, now: number): Transition => {
  const state = pruneExpired(current, now)
  const wasTrusted = isTrusted(state, peer)
  const next: TrustState = {
    ...state,
    trusted: without(state.trusted, peer),
    pending: without(state.pending, peer),
    outgoing: without(state.outgoing, peer)
  }
  return {
    state: next,
    effects: [
      { _tag: "TearDownTunnel", peer },
      { _tag: "RevokeTrust", peer },
      ...(wasTrusted ? [publish({ name: "trust.changed", peer, state: "revoked", reason: "peer_revoked" })] : [])
    ],
    changed: next.trusted !== state.trusted || next.pending !== state.pending
  }
}

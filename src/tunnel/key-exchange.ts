/**
 * The key-exchange decisions of one peer (reference §4.3-§4.5, §14.1-§14.6) as a pure function:
 * `decideKeyExchange(peer, input, context) → { state, actions }`. No I/O, no clock (`context.nowMs`), no
 * crypto: the shell verifies PILA signatures, derives and holds the `SessionKeys`, seals and opens frames,
 * sends datagrams and publishes events, doing exactly what the returned actions say, in order.
 * `peer-table.ts` keeps one `PeerState` per node and supplies the table-wide facts (room left).
 *
 * Every rule below was paid for by a production incident (reference §14):
 *
 * - A session is installed only for a first key or a changed key. Re-installing on a same-key frame resets
 *   the nonce counter and replay window under in-flight traffic (§14.1).
 * - The same key within `DUPLICATE_HANDSHAKE_DEBOUNCE_MS` of the install (the relay copy of one PILA, a burst
 *   of retransmits) is a duplicate: one Debug line and nothing else, not even a state change.
 * - The same key later is the peer's keepalive retransmit: Debug (not Info) log, but `tunnel.established` and
 *   the post-install hook still fire (path refresh). It does not count as inbound liveness: that closed
 *   the asymmetric-recovery gate on exactly the frames it exists for (the "desync loop", §14.2).
 * - Asymmetric recovery: if nothing decrypted for more than `KEY_EXCHANGE_REPLY_STALE_THRESHOLD_MS`, a
 *   same-key frame is answered with our PILA (no re-install), at most once per
 *   `KEY_EXCHANGE_REPLY_INTERVAL_MS` per peer (the unthrottled version ping-ponged, §14.2).
 * - Sending: while we hold no session and an earlier send went unanswered (or the peer is sending PILS
 *   under a session we lack), a PILK "key request" goes along with our PILA: a peer that knows our identity answers a PILK with its
 *   PILA, which breaks the first-contact deadlock where its single reply was lost (§14.3).
 * - Retransmit every `REKEY_RETRANSMIT_INTERVAL_MS`; the second attempt goes through the relay (a flip
 *   restarts the count); after `MAX_REKEY_ATTEMPTS + 1` attempts give up: `tunnel.rekey_gave_up`, a path
 *   reset (≤ 1 per 30 s), and a `REKEY_GIVE_UP_COOLDOWN_MS` cooldown during which outbound packets fail fast;
 *   only a successful decrypt (or the cooldown's end) lifts it (§14.6).
 * - Outbound packets without a key wait in a queue of `MAX_PENDING_PER_PEER`; when it is full the newest is
 *   dropped (keeping the ordered SYN/data prefix), counted, and logged at most once per 5 s per peer. They are
 *   flushed in order on install, after our reply KX so the peer can decrypt them.
 * - The peer's endpoint moves only on a packet both authenticated and fresh: a decrypted PILS (AEAD and
 *   replay window passed) from a new direct address — a NAT remap. A PILA is authenticated but not fresh
 *   (one signature serves the whole session), so it, like the unauthenticated PILK and undecryptable PILS,
 *   only fills in a missing endpoint: a captured PILA replayed from elsewhere cannot redirect the peer.
 * - The answer to a direct KX frame (install reply, recovery, key-request answer) goes back to the frame's
 *   source (`replyTo`) without recording it: a peer restarted on a new port must get our key there, or
 *   neither side could ever decrypt. A replay thus draws at most our PILA to the replayer (per-IP bucket,
 *   1 s recovery gate); retransmits, queued packets and data keep to the learned endpoint.
 * - Drop gates (§4.3 step 5): the session is dropped and a key requested after repeated AEAD failures (past
 *   a grace after install) or repeated replay/outside-window rejections (past a grace after the newest epoch
 *   began), or after a single such rejection from a peer that was quiet for a minute (it restarted).
 *
 * Decisions where the reference is silent or unsafe, taken here:
 * - We always hold an identity (pilotfish generates one), so our KX is always a PILA.
 * - The reference's post-install hook sets the endpoint to any valid KX frame's source (§4.4): that is the
 *   replay hole closed above. Endpoints move on decrypted PILS only (§4.3 step 7 keeps doing so).
 * - A PILK (unauthenticated) never replaces an authenticated session's key; it is refused with a Debug line.
 *   A same-key PILA upgrades a PILK session to authenticated without re-installing.
 * - The aged fast path is keyed on quiet time (no decrypt for `QUIET_PEER_FAST_DROP_MS`), not on the age of
 *   the newest epoch: a busy session running on one epoch for hours must not die of one duplicated datagram.
 * - A spoofed inner source is logged at Debug only: the `security.src_spoofed` event carries the signal, and
 *   a Warning per packet would hand a misbehaving peer a log flood (§14.10).
 * - `SessionId`s make every decrypt-path input a compare-and-act (the reference's `CompareAndDrop`): an input
 *   about a session that has since been replaced is ignored.
 * - Relay: a relay-delivered KX admits the peer to the relay only when no direct endpoint is known; the
 *   retransmit fallback and `DirectPathSilent` flip it; only `DirectPathRestored` flips it back. Both are the
 *   path layer's verdicts (`path-monitor.ts`); pinning and the relay→direct upgrade policy belong there.
 */
import { bytesEqual } from "../crypto/bytes.ts"
import type { Packet } from "../protocol/packet.ts"
import { bindInnerSource, isNatKeepalive } from "./identity-binding.ts"

// ---------------------------------------------------------------------------------------------------------
// Constants (reference names in comments)

/** `DuplicateHandshakeDebounce`: same key this soon after the install is a duplicate. */
export const DUPLICATE_HANDSHAKE_DEBOUNCE_MS = 250
/** `KeyExchangeReplyStaleThreshold`: no decrypt for longer than this → answer a same-key PILA. */
export const KEY_EXCHANGE_REPLY_STALE_THRESHOLD_MS = 6_000
/** `MarkReplyKeyExchangeSent` gate: at most one asymmetric-recovery reply per peer this often. */
export const KEY_EXCHANGE_REPLY_INTERVAL_MS = 1_000
/** `RekeyRetransmitInterval`. */
export const REKEY_RETRANSMIT_INTERVAL_MS = 4_000
/** `MaxRekeyAttempts`: the retransmit loop gives up once `MAX_REKEY_ATTEMPTS + 1` attempts went unanswered. */
export const MAX_REKEY_ATTEMPTS = 5
/** `RekeyRelayFallbackAfter`: attempts from this one on go through the relay. */
export const REKEY_RELAY_FALLBACK_AFTER = 2
/** Give-up cooldown (was 60 s in the reference, lowered to 5 s, §14.6). */
export const REKEY_GIVE_UP_COOLDOWN_MS = 5_000
/** `onRekeyGaveUp` (full path reset) runs at most this often per peer. */
export const REKEY_GIVE_UP_PATH_RESET_INTERVAL_MS = 30_000
/** `KeyRequestAfterSends`: unanswered sends after which a PILK key request goes along. */
export const KEY_REQUEST_AFTER_SENDS = 1
/** `maybeRequestRekey` per-peer rate limit. */
export const REKEY_REQUEST_INTERVAL_MS = 3_000
/** Outbound packets queued per peer while its key is pending. */
export const MAX_PENDING_PER_PEER = 64
/** The queue-full warning is logged at most this often per peer (§14.10: 4927 lines/min). */
export const PENDING_DROP_LOG_INTERVAL_MS = 5_000
/** Drop gates (§4.3 step 5). */
export const MAX_DECRYPT_FAILURES = 5
export const DECRYPT_FAILURE_GRACE_MS = 3_000
export const MAX_WINDOW_REJECTIONS = 5
export const WINDOW_REJECTION_GRACE_MS = 1_000
export const QUIET_PEER_FAST_DROP_MS = 60_000

// ---------------------------------------------------------------------------------------------------------
// State

/** Identifies one installed session; the table hands out a fresh one per install (never reused). */
export type SessionId = number

/** How a datagram reached us: straight from the peer's UDP endpoint (`host:port`), or relayed by the beacon. */
export type Via =
  | { readonly _tag: "Direct"; readonly endpoint: string }
  | { readonly _tag: "Relay" }

export interface Session {
  readonly id: SessionId
  /** Our own copy, never a view of a receive buffer (reference §13, `zz_peer_key_buffer_alias_test`). */
  readonly peerX25519: Uint8Array
  /** PILA-verified (or upgraded by a later same-key PILA), as opposed to accepted from a PILK. */
  readonly authenticated: boolean
  /** Whether the frame that installed it came through the relay. */
  readonly viaRelay: boolean
  readonly installedAtMs: number
  /** Inbound liveness: last successful decrypt, or the install (a real install counts, a keepalive KX not). */
  readonly lastDecryptMs: number
  /** When the peer's newest send epoch began (the install until its first frame). */
  readonly newestEpochAtMs: number
  readonly lastRecoveryReplyMs: number | undefined
  /** Consecutive faults feeding the drop gates; a successful decrypt resets them. */
  readonly decryptFailures: number
  readonly windowRejections: { readonly replay: number; readonly outside_window: number }
}

/** Our key exchange was sent and not yet answered (by a KX frame or a decrypt). */
export interface PendingRekey {
  /** Sends counted towards the give-up (a relay flip restarts the count). */
  readonly attempts: number
  readonly lastSentMs: number
}

export interface PeerState {
  readonly session: Session | undefined
  readonly rekey: PendingRekey | undefined
  /** Give-up cooldown end; outbound packets without a key fail fast before it. */
  readonly cooldownUntilMs: number | undefined
  /** The peer's UDP endpoint as last learned. */
  readonly endpoint: string | undefined
  /** Send through the beacon relay instead of the endpoint. */
  readonly relay: boolean
  /** Outbound packets waiting for a key, oldest first; the core owns them. */
  readonly pending: ReadonlyArray<Uint8Array>
  readonly lastRekeyRequestMs: number | undefined
  readonly lastPathResetMs: number | undefined
  readonly lastPendingDropLogMs: number | undefined
}

export const EMPTY_PEER: PeerState = {
  session: undefined,
  rekey: undefined,
  cooldownUntilMs: undefined,
  endpoint: undefined,
  relay: false,
  pending: [],
  lastRekeyRequestMs: undefined,
  lastPathResetMs: undefined,
  lastPendingDropLogMs: undefined
}

/**
 * Whether the table may forget this peer: nothing installed, pending or cooling down, and no rate-limit
 * stamp still in force (forgetting one early would lift the limit).
 */
export const isDisposable = (peer: PeerState, nowMs: number): boolean =>
  peer.session === undefined &&
  peer.rekey === undefined &&
  peer.pending.length === 0 &&
  !within(peer.cooldownUntilMs, 0, nowMs) &&
  !within(peer.lastRekeyRequestMs, REKEY_REQUEST_INTERVAL_MS, nowMs) &&
  !within(peer.lastPathResetMs, REKEY_GIVE_UP_PATH_RESET_INTERVAL_MS, nowMs)

/** `stampMs + windowMs > nowMs`, false for a missing stamp. */
const within = (stampMs: number | undefined, windowMs: number, nowMs: number): boolean =>
  stampMs !== undefined && nowMs < stampMs + windowMs

/** Whether a `Tick` at `nowMs` would retransmit or give up (the table budgets these per tick). */
export const isRekeyDue = (peer: PeerState, nowMs: number): boolean =>
  peer.rekey !== undefined && nowMs - peer.rekey.lastSentMs >= REKEY_RETRANSMIT_INTERVAL_MS

// ---------------------------------------------------------------------------------------------------------
// Inputs

/** Which epoch a decrypted frame belonged to, per its `ReplayGuard` (src/crypto/replay.ts). */
export type DecryptEpoch = "newest" | "new" | "older"

export type DecryptFault = "auth_failed" | "replay" | "outside_window" | "epochs_exhausted"

export type KeyExchangeInput =
  /** A PILA whose signature the shell verified against the registry's key for the node (peer-keys.ts). */
  | { readonly _tag: "AuthKeyExchange"; readonly x25519: Uint8Array; readonly via: Via }
  /** A PILK; `registryKnowsNode` per peer-keys.ts `knowledge` (a known node's PILK is answered, not accepted). */
  | {
    readonly _tag: "KeyExchange"
    readonly x25519: Uint8Array
    readonly via: Via
    readonly registryKnowsNode: boolean
  }
  /** A PILS opened and replay-accepted under `session`; `packet` is the decoded inner packet. */
  | {
    readonly _tag: "Decrypted"
    readonly session: SessionId
    readonly via: Via
    readonly epoch: DecryptEpoch
    readonly packet: Packet
  }
  /**
   * A PILS under `session` failed: AEAD (`auth_failed`), replay or outside-window rejection in the newest
   * epoch, or the replay guard is `exhausted`. Stale-epoch rejections feed no gate and are not reported.
   */
  | { readonly _tag: "DecryptRejected"; readonly session: SessionId; readonly via: Via; readonly fault: DecryptFault }
  /** A PILS arrived and the shell holds no session for its sender (the reference's `ErrNoKey`). */
  | { readonly _tag: "NoSession"; readonly via: Via }
  /** The shell could not derive `session` (e.g. a low-order X25519 point) and aborted the rest of that batch. */
  | { readonly _tag: "InstallFailed"; readonly session: SessionId }
  /** An outbound packet the shell had no key for. Ownership of `packet` passes to the core. */
  | { readonly _tag: "OutboundPacket"; readonly packet: Uint8Array }
  /** The path layer found the direct path working again: leave the relay. */
  | { readonly _tag: "DirectPathRestored" }
  /** The path layer found the direct path silent (sends unanswered, or the peer is relay-only): use the relay. */
  | { readonly _tag: "DirectPathSilent" }
  /** Time passed: retransmit or give up a due key exchange, end an expired cooldown. */
  | { readonly _tag: "Tick" }
  /** Forget the peer entirely (§14.11: state must not leak to a recycled node ID). */
  | { readonly _tag: "RemovePeer" }

/** Facts about the rest of the table and the moment, supplied by `peer-table.ts` (or a test). */
export interface DecisionContext {
  /** The peer's node ID (for identity binding). */
  readonly nodeId: number
  readonly nowMs: number
  /** The id a session installed by this step takes. */
  readonly nextSessionId: SessionId
  /** The crypto table has room for this peer's session (checked before any key derivation). */
  readonly sessionRoom: boolean
  /** The table has room to keep this peer without a session (always true for a peer it already holds). */
  readonly peerRoom: boolean
  /** A new pending queue may start (the pending-peers bound). */
  readonly pendingPeerRoom: boolean
  /** A due retransmit may go out in this tick (the per-tick budget). */
  readonly mayRetransmit: boolean
}

// ---------------------------------------------------------------------------------------------------------
// Actions

export type SendReason = "reply" | "recovery" | "initiate" | "retransmit" | "rekey_request" | "key_request_answer"

export type SessionDropReason =
  | "decrypt_failures"
  | "replay"
  | "outside_window"
  | "quiet_peer_rejected"
  | "epochs_exhausted"
  | "install_failed"
  | "peer_removed"

/** Why the outbound packet of this step was refused: the shell fails the send with `ErrPendingDropped`. */
export type PacketDropReason = "rekey_cooldown" | "pending_full" | "pending_peers_full" | "peer_table_full"

export type PendingDropReason = "rekey_gave_up" | "peer_removed"

export type TunnelEvent =
  | {
    readonly name: "tunnel.established"
    readonly authenticated: boolean
    readonly relay: boolean
    readonly rekeyed: boolean
  }
  | { readonly name: "tunnel.rekey_gave_up"; readonly attempts: number }
  | { readonly name: "security.src_spoofed"; readonly claimedNode: number }

export type LogLevel = "Debug" | "Info" | "Warning"

export type Action =
  /** Derive the session from `peerX25519` (X25519 + HKDF) and use it from now on; on failure feed `InstallFailed`. */
  | { readonly _tag: "InstallSession"; readonly session: SessionId; readonly peerX25519: Uint8Array }
  | { readonly _tag: "DropSession"; readonly session: SessionId; readonly reason: SessionDropReason }
  /** The crypto table (or the peer table) is full: nothing was derived or kept. */
  | { readonly _tag: "RejectTableFull"; readonly table: "sessions" | "peers" }
  /**
   * Send our PILA, plus a PILK when `keyRequest`. `direct`: to the endpoint, plus a relay copy through the
   * beacon when one is known (dual-NAT convergence, §4.5); `relay`: through the beacon only. `replyTo` (an
   * answer to a direct KX frame, always `direct`): the direct copy goes to that `host:port` instead of the
   * endpoint, which it does not change.
   */
  | {
    readonly _tag: "SendKeyExchange"
    readonly keyRequest: boolean
    readonly path: "direct" | "relay"
    readonly reason: SendReason
    readonly replyTo?: string
  }
  /** Seal and send these packets, in this order (the pending flush). */
  | { readonly _tag: "SendPackets"; readonly packets: ReadonlyArray<Uint8Array> }
  | { readonly _tag: "DropPacket"; readonly reason: PacketDropReason }
  /** Queued packets discarded (counted). */
  | { readonly _tag: "DropPending"; readonly count: number; readonly reason: PendingDropReason }
  /** Hand the decrypted packet to the transport (absent: keepalive or refused). */
  | { readonly _tag: "Deliver" }
  | { readonly _tag: "LearnEndpoint"; readonly endpoint: string }
  /** A real flip of the relay flag (logged by the shell only then, §14.10). */
  | { readonly _tag: "SetRelay"; readonly relay: boolean }
  /**
   * The daemon's `onKeyInstalled`: fires for installs and for same-session KX past the debounce (path
   * refresh; it must not take the frame's source as the endpoint, see above). `rekeyed`: the key changed,
   * replay the salvage ring under the new session.
   */
  | { readonly _tag: "PostInstallHook"; readonly viaRelay: boolean; readonly rekeyed: boolean }
  /** The daemon's `onRekeyGaveUp`: full path reset. */
  | { readonly _tag: "ResetPath" }
  | { readonly _tag: "Emit"; readonly event: TunnelEvent }
  | { readonly _tag: "Log"; readonly level: LogLevel; readonly message: string }

export interface Decision {
  readonly state: PeerState
  readonly actions: ReadonlyArray<Action>
}

// ---------------------------------------------------------------------------------------------------------
// Decision function

const NO_ACTIONS: ReadonlyArray<Action> = []
const DELIVER: Action = { _tag: "Deliver" }
const ONLY_DELIVER: ReadonlyArray<Action> = [DELIVER]
const log = (level: LogLevel, message: string): Action => ({ _tag: "Log", level, message })
const unchanged = (peer: PeerState): Decision => ({ state: peer, actions: NO_ACTIONS })

export const decideKeyExchange = (peer: PeerState, input: KeyExchangeInput, ctx: DecisionContext): Decision => {
  switch (input._tag) {
    case "AuthKeyExchange":
      return onKeyExchange(peer, input.x25519, input.via, true, ctx)
    case "KeyExchange":
      return input.registryKnowsNode
        ? answerKeyRequest(peer, input.via, ctx)
        : onKeyExchange(peer, input.x25519, input.via, false, ctx)
    case "Decrypted":
      return onDecrypted(peer, input.session, input.via, input.epoch, input.packet, ctx)
    case "DecryptRejected":
      return onDecryptRejected(peer, input.session, input.via, input.fault, ctx)
    case "NoSession":
      return isDisposable(peer, ctx.nowMs) && !ctx.peerRoom
        ? { state: peer, actions: [{ _tag: "RejectTableFull", table: "peers" }] }
        : requestRekey(peer, input.via, [], ctx.nowMs)
    case "InstallFailed":
      return onInstallFailed(peer, input.session)
    case "OutboundPacket":
      return onOutbound(peer, input.packet, ctx)
    case "DirectPathRestored":
      return peer.relay ? { state: { ...peer, relay: false }, actions: [{ _tag: "SetRelay", relay: false }] } : unchanged(peer)
    case "DirectPathSilent":
      return peer.relay ? unchanged(peer) : { state: { ...peer, relay: true }, actions: [{ _tag: "SetRelay", relay: true }] }
    case "Tick":
      return onTick(peer, ctx)
    case "RemovePeer":
      return onRemove(peer)
  }
}

// --- key exchange frames ---------------------------------------------------------------------------------

const onKeyExchange = (
  peer: PeerState,
  x25519: Uint8Array,
  via: Via,
  authenticated: boolean,
  ctx: DecisionContext
): Decision => {
  const old = peer.session
  if (old !== undefined && bytesEqual(old.peerX25519, x25519)) {
    return ctx.nowMs - old.installedAtMs < DUPLICATE_HANDSHAKE_DEBOUNCE_MS
      ? { state: peer, actions: [log("Debug", "duplicate key exchange ignored")] }
      : onSameSession(peer, old, via, authenticated, ctx.nowMs)
  }
  if (old?.authenticated === true && !authenticated) {
    return { state: peer, actions: [log("Debug", "unauthenticated key exchange (PILK) refused: it would replace an authenticated session")] }
  }
  if (old === undefined && !ctx.sessionRoom) return { state: peer, actions: [{ _tag: "RejectTableFull", table: "sessions" }] }
  return install(peer, x25519, via, authenticated, ctx)
}

/** First key or changed key: the only path that installs a session. */
const install = (peer: PeerState, x25519: Uint8Array, via: Via, authenticated: boolean, ctx: DecisionContext): Decision => {
  const nowMs = ctx.nowMs
  const rekeyed = peer.session !== undefined
  const viaRelay = via._tag === "Relay"
  const session: Session = {
    id: ctx.nextSessionId,
    peerX25519: x25519.slice(),
    authenticated,
    viaRelay,
    installedAtMs: nowMs,
    lastDecryptMs: nowMs,
    newestEpochAtMs: nowMs,
    lastRecoveryReplyMs: undefined,
    decryptFailures: 0,
    windowRejections: NO_WINDOW_REJECTIONS
  }
  const actions: Array<Action> = [{ _tag: "InstallSession", session: session.id, peerX25519: session.peerX25519 }]
  const learned = fillInPath(peer, via, actions)
  actions.push(
    log("Info", rekeyed ? "peer rekeyed" : "encrypted tunnel established"),
    { _tag: "Emit", event: { name: "tunnel.established", authenticated, relay: viaRelay, rekeyed } },
    // The peer has shown it is talking to us: answer so it gets our key, and stop our own retransmits.
    sendAction(learned, false, "reply", via),
    { _tag: "PostInstallHook", viaRelay, rekeyed }
  )
  if (learned.pending.length > 0) actions.push({ _tag: "SendPackets", packets: learned.pending })
  return { state: { ...learned, session, rekey: undefined, pending: [] }, actions }
}

/** Same key past the debounce: the peer's keepalive retransmit. Never re-installs, never counts as liveness. */
const onSameSession = (peer: PeerState, old: Session, via: Via, authenticated: boolean, nowMs: number): Decision => {
  const viaRelay = via._tag === "Relay"
  const actions: Array<Action> = []
  const learned = fillInPath(peer, via, actions)
  actions.push(
    log("Debug", "same-session key exchange (peer keepalive)"),
    {
      _tag: "Emit",
      event: { name: "tunnel.established", authenticated: old.authenticated || authenticated, relay: viaRelay, rekeyed: false }
    }
  )
  let session: Session = authenticated && !old.authenticated ? { ...old, authenticated } : old
  const stale = nowMs - old.lastDecryptMs > KEY_EXCHANGE_REPLY_STALE_THRESHOLD_MS
  if (stale && !within(old.lastRecoveryReplyMs, KEY_EXCHANGE_REPLY_INTERVAL_MS, nowMs)) {
    // Asymmetric recovery: the peer keeps presenting this key, yet nothing from it has decrypted for 6 s —
    // it has probably lost the session while we kept ours. Re-send our key without touching the session.
    session = { ...session, lastRecoveryReplyMs: nowMs }
    actions.push(sendAction(learned, false, "recovery", via))
  }
  actions.push({ _tag: "PostInstallHook", viaRelay, rekeyed: false })
  return { state: { ...learned, session, rekey: undefined }, actions }
}

/** A PILK from a node the registry knows: it asks for our key; answer with our PILA, do not accept it. */
const answerKeyRequest = (peer: PeerState, via: Via, ctx: DecisionContext): Decision => {
  if (isDisposable(peer, ctx.nowMs) && !ctx.peerRoom) return { state: peer, actions: [{ _tag: "RejectTableFull", table: "peers" }] }
  const actions: Array<Action> = []
  const learned = fillInPath(peer, via, actions)
  actions.push(log("Debug", "key request (PILK) from a registered node answered with our PILA"))
  return sendKeyExchange(learned, "key_request_answer", actions, ctx.nowMs, via)
}

// --- decrypt path ----------------------------------------------------------------------------------------

const NO_WINDOW_REJECTIONS = { replay: 0, outside_window: 0 } as const

/** The installed session if `id` still names it (compare-and-act), else `undefined`. */
const current = (peer: PeerState, id: SessionId): Session | undefined =>
  peer.session !== undefined && peer.session.id === id ? peer.session : undefined

const onDecrypted = (
  peer: PeerState,
  id: SessionId,
  via: Via,
  epoch: DecryptEpoch,
  packet: Packet,
  ctx: DecisionContext
): Decision => {
  const session = current(peer, id)
  if (session === undefined) return unchanged(peer)
  const nowMs = ctx.nowMs
  const binding = bindInnerSource(packet, ctx.nodeId)
  // The frame passed AEAD and replay, which resets the fault counters whatever the binding says (replay and
  // outside-window only for the newest epoch: an older epoch's straggler says nothing about the current one).
  // Only an unspoofed packet is liveness, and only an unspoofed direct one moves the endpoint: authenticated
  // and fresh (past AEAD and the replay window), it is the one proof of where the peer is now (NAT remap).
  const next: Session = {
    ...session,
    decryptFailures: 0,
    windowRejections: epoch === "older" ? session.windowRejections : NO_WINDOW_REJECTIONS,
    newestEpochAtMs: epoch === "new" ? nowMs : session.newestEpochAtMs,
    lastDecryptMs: binding === "spoofed" ? session.lastDecryptMs : nowMs
  }
  if (binding === "spoofed") {
    return {
      state: { ...peer, session: next },
      actions: [
        log("Debug", `decrypted packet claims source node ${packet.src.node}: dropped`),
        { _tag: "Emit", event: { name: "security.src_spoofed", claimedNode: packet.src.node } }
      ]
    }
  }
  const deliver = binding === "bound" && !isNatKeepalive(packet)
  const state: PeerState = { ...peer, session: next, rekey: undefined, cooldownUntilMs: undefined }
  if (via._tag === "Relay" || via.endpoint === peer.endpoint) return { state, actions: deliver ? ONLY_DELIVER : NO_ACTIONS }
  const learn: Action = { _tag: "LearnEndpoint", endpoint: via.endpoint }
  return { state: { ...state, endpoint: via.endpoint }, actions: deliver ? [learn, DELIVER] : [learn] }
}

const onDecryptRejected = (
  peer: PeerState,
  id: SessionId,
  via: Via,
  fault: DecryptFault,
  ctx: DecisionContext
): Decision => {
  const session = current(peer, id)
  if (session === undefined) return unchanged(peer)
  const nowMs = ctx.nowMs
  let next: Session
  let drop: SessionDropReason | undefined
  switch (fault) {
    case "epochs_exhausted":
      drop = "epochs_exhausted"
      next = session
      break
    case "auth_failed": {
      const failures = session.decryptFailures + 1
      next = { ...session, decryptFailures: failures }
      // The grace keeps a fresh session from being dropped on frames still in flight under the old key (§14.5).
      if (failures >= MAX_DECRYPT_FAILURES && nowMs - session.installedAtMs >= DECRYPT_FAILURE_GRACE_MS) {
        drop = "decrypt_failures"
      }
      break
    }
    case "replay":
    case "outside_window": {
      const count = session.windowRejections[fault] + 1
      next = { ...session, windowRejections: { ...session.windowRejections, [fault]: count } }
      if (nowMs - session.lastDecryptMs >= QUIET_PEER_FAST_DROP_MS) {
        drop = "quiet_peer_rejected"
      } else if (count >= MAX_WINDOW_REJECTIONS && nowMs - session.newestEpochAtMs >= WINDOW_REJECTION_GRACE_MS) {
        drop = fault
      }
      break
    }
  }
  if (drop === undefined) return { state: { ...peer, session: next }, actions: NO_ACTIONS }
  const actions: Array<Action> = [
    { _tag: "DropSession", session: id, reason: drop },
    log("Info", `tunnel session dropped (${drop}); requesting a new key`)
  ]
  return requestRekey({ ...peer, session: undefined }, via, actions, nowMs)
}

/**
 * The reference's `maybeRequestRekey`: the peer is sending under a session we do not have (any more).
 * Rate-limited per peer; the unauthenticated source only fills in a missing endpoint and gets no answer of
 * its own (anyone can send a PILS that fails to open).
 */
const requestRekey = (peer: PeerState, via: Via, actions: Array<Action>, nowMs: number): Decision => {
  if (within(peer.lastRekeyRequestMs, REKEY_REQUEST_INTERVAL_MS, nowMs)) return { state: peer, actions }
  const learned = fillInPath(peer, via, actions)
  return sendKeyExchange({ ...learned, lastRekeyRequestMs: nowMs }, "rekey_request", actions, nowMs)
}

const onInstallFailed = (peer: PeerState, id: SessionId): Decision =>
  current(peer, id) === undefined
    ? unchanged(peer)
    : {
      state: { ...peer, session: undefined },
      actions: [
        { _tag: "DropSession", session: id, reason: "install_failed" },
        log("Warning", "tunnel key derivation failed: the peer's X25519 key is unusable")
      ]
    }

// --- outbound without a key ------------------------------------------------------------------------------

const onOutbound = (peer: PeerState, packet: Uint8Array, ctx: DecisionContext): Decision => {
  const nowMs = ctx.nowMs
  // The shell's view lagged behind an install: the packet can go now.
  if (peer.session !== undefined) return { state: peer, actions: [{ _tag: "SendPackets", packets: [packet] }] }
  if (within(peer.cooldownUntilMs, 0, nowMs)) return { state: peer, actions: [{ _tag: "DropPacket", reason: "rekey_cooldown" }] }
  if (isDisposable(peer, nowMs) && !ctx.peerRoom) return { state: peer, actions: [{ _tag: "DropPacket", reason: "peer_table_full" }] }
  const cooled: PeerState = peer.cooldownUntilMs === undefined ? peer : { ...peer, cooldownUntilMs: undefined }
  const actions: Array<Action> = []
  let queued: PeerState
  if (cooled.pending.length >= MAX_PENDING_PER_PEER) {
    // Drop the newest: the queue keeps the ordered SYN/data prefix the transport needs first.
    actions.push({ _tag: "DropPacket", reason: "pending_full" })
    queued = cooled
    if (!within(cooled.lastPendingDropLogMs, PENDING_DROP_LOG_INTERVAL_MS, nowMs)) {
      actions.push(log("Warning", `pending queue full (${MAX_PENDING_PER_PEER} packets) while waiting for the peer's key: dropping`))
      queued = { ...cooled, lastPendingDropLogMs: nowMs }
    }
  } else if (cooled.pending.length === 0 && !ctx.pendingPeerRoom) {
    actions.push({ _tag: "DropPacket", reason: "pending_peers_full" })
    queued = cooled
  } else {
    queued = { ...cooled, pending: [...cooled.pending, packet] }
  }
  // One key exchange at a time: SYN retransmits every 250 ms used to burn through every attempt (§4.5).
  if (queued.rekey !== undefined) return { state: queued, actions }
  return sendKeyExchange(queued, "initiate", actions, nowMs)
}

// --- time ------------------------------------------------------------------------------------------------

const onTick = (peer: PeerState, ctx: DecisionContext): Decision => {
  const nowMs = ctx.nowMs
  const cooled = peer.cooldownUntilMs !== undefined && nowMs >= peer.cooldownUntilMs ? { ...peer, cooldownUntilMs: undefined } : peer
  const rekey = cooled.rekey
  if (rekey === undefined || !isRekeyDue(cooled, nowMs) || !ctx.mayRetransmit) return { state: cooled, actions: NO_ACTIONS }
  if (rekey.attempts >= MAX_REKEY_ATTEMPTS + 1) return giveUp(cooled, rekey.attempts, nowMs)
  const actions: Array<Action> = []
  let next = cooled
  if (rekey.attempts + 1 >= REKEY_RELAY_FALLBACK_AFTER && !cooled.relay) {
    // The direct endpoint may be dead (NAT remap, restart): go through the relay and give it a full budget.
    actions.push(
      { _tag: "SetRelay", relay: true },
      log("Info", "key exchange unanswered: falling back to the relay")
    )
    next = { ...cooled, relay: true, rekey: { ...rekey, attempts: 0 } }
  }
  return sendKeyExchange(next, "retransmit", actions, nowMs, undefined, rekey.attempts)
}

const giveUp = (peer: PeerState, attempts: number, nowMs: number): Decision => {
  const actions: Array<Action> = [
    log("Warning", `key exchange gave up after ${attempts} unanswered attempts`),
    { _tag: "Emit", event: { name: "tunnel.rekey_gave_up", attempts } }
  ]
  if (peer.pending.length > 0) actions.push({ _tag: "DropPending", count: peer.pending.length, reason: "rekey_gave_up" })
  const resetsPath = !within(peer.lastPathResetMs, REKEY_GIVE_UP_PATH_RESET_INTERVAL_MS, nowMs)
  if (resetsPath) actions.push({ _tag: "ResetPath" })
  return {
    state: {
      ...peer,
      rekey: undefined,
      pending: [],
      cooldownUntilMs: nowMs + REKEY_GIVE_UP_COOLDOWN_MS,
      lastPathResetMs: resetsPath ? nowMs : peer.lastPathResetMs
    },
    actions
  }
}

const onRemove = (peer: PeerState): Decision => {
  const actions: Array<Action> = []
  if (peer.session !== undefined) actions.push({ _tag: "DropSession", session: peer.session.id, reason: "peer_removed" })
  if (peer.pending.length > 0) actions.push({ _tag: "DropPending", count: peer.pending.length, reason: "peer_removed" })
  return { state: EMPTY_PEER, actions }
}

// --- shared helpers --------------------------------------------------------------------------------------

/**
 * Our key exchange, along the peer's path; or, `answering` a direct KX frame, straight back to that frame's
 * source (which the sender has shown it listens on, fresh or not).
 */
const sendAction = (peer: PeerState, keyRequest: boolean, reason: SendReason, answering?: Via): Action =>
  answering?._tag === "Direct"
    ? { _tag: "SendKeyExchange", keyRequest, path: "direct", reason, replyTo: answering.endpoint }
    : { _tag: "SendKeyExchange", keyRequest, path: peer.relay ? "relay" : "direct", reason }

/**
 * The reference's `SendKeyExchangeToNode` + `MarkPendingRekey`: our PILA, with a PILK key request while we
 * hold no session and an earlier send went unanswered or the peer's traffic showed it has a session we
 * lack (`rekey_request`). `answering`: see `sendAction`. `unanswered` defaults to the pending attempts (a
 * retransmit passes the count from before a relay flip reset it).
 */
const sendKeyExchange = (
  peer: PeerState,
  reason: SendReason,
  actions: Array<Action>,
  nowMs: number,
  answering?: Via,
  unanswered = peer.rekey?.attempts ?? 0
): Decision => {
  const keyRequest = peer.session === undefined && (unanswered >= KEY_REQUEST_AFTER_SENDS || reason === "rekey_request")
  actions.push(sendAction(peer, keyRequest, reason, answering))
  return {
    state: { ...peer, rekey: { attempts: (peer.rekey?.attempts ?? 0) + 1, lastSentMs: nowMs } },
    actions
  }
}

/**
 * What a frame that does not prove freshness (any KX frame, an undecryptable PILS) teaches about the peer's
 * path while none is known: a direct one fills in the endpoint, a relayed one admits the peer to the relay.
 * A known endpoint moves only in `onDecrypted`. Appends the actions for real changes only.
 */
const fillInPath = (peer: PeerState, via: Via, actions: Array<Action>): PeerState => {
  if (peer.endpoint !== undefined) return peer
  if (via._tag === "Relay") {
    if (peer.relay) return peer
    actions.push({ _tag: "SetRelay", relay: true })
    return { ...peer, relay: true }
  }
  actions.push({ _tag: "LearnEndpoint", endpoint: via.endpoint })
  return { ...peer, endpoint: via.endpoint }
}

/**
 * The key-exchange decision table (reference §4.3-§4.5, §14.1-§14.6): one row per rule, each giving a
 * peer state, an input, the moment, and the exact actions and state expected.
 */
import { describe, expect, it } from "vitest"
import {
  type Action,
  decideKeyExchange,
  type DecisionContext,
  type DecryptFault,
  EMPTY_PEER,
  type KeyExchangeInput,
  type LogLevel,
  MAX_PENDING_PER_PEER,
  type PeerState,
  type SendReason
} from "../../src/tunnel/key-exchange.ts"
import {
  context,
  dataPacket,
  decrypted,
  direct,
  EP,
  EP2,
  KEY_A,
  KEY_B,
  keepalive,
  OTHER_NODE,
  outbound,
  packets,
  peer,
  pila,
  pilk,
  RELAY,
  session
} from "./fixtures.ts"

// --- expected actions ------------------------------------------------------------------------------------

const logAt = (level: LogLevel, text?: string): Action => ({
  _tag: "Log",
  level,
  message: text === undefined ? expect.any(String) : expect.stringContaining(text)
})
const send = (reason: SendReason, keyRequest = false, path: "direct" | "relay" = "direct"): Action => ({
  _tag: "SendKeyExchange",
  keyRequest,
  path,
  reason
})
/** Our PILA answering a direct KX frame: straight back to the frame's source. */
const answer = (reason: SendReason, replyTo = EP, keyRequest = false): Action => ({
  _tag: "SendKeyExchange",
  keyRequest,
  path: "direct",
  reason,
  replyTo
})
const established = (authenticated: boolean, relay: boolean, rekeyed: boolean): Action => ({
  _tag: "Emit",
  event: { name: "tunnel.established", authenticated, relay, rekeyed }
})
const hook = (viaRelay: boolean, rekeyed: boolean): Action => ({ _tag: "PostInstallHook", viaRelay, rekeyed })
const installs = (peerX25519: Uint8Array, id = 7): Action => ({ _tag: "InstallSession", session: id, peerX25519 })
const drop = (reason: Extract<Action, { _tag: "DropPacket" }>["reason"]): Action => ({ _tag: "DropPacket", reason })
const dropSession = (reason: Extract<Action, { _tag: "DropSession" }>["reason"], id = 3): Action => ({
  _tag: "DropSession",
  session: id,
  reason
})
const DELIVER: Action = { _tag: "Deliver" }
const learn = (endpoint: string): Action => ({ _tag: "LearnEndpoint", endpoint })
const setRelay = (relay: boolean): Action => ({ _tag: "SetRelay", relay })

const rejected = (fault: DecryptFault, via = direct()): KeyExchangeInput => ({
  _tag: "DecryptRejected",
  session: 3,
  via,
  fault
})
const TICK: KeyExchangeInput = { _tag: "Tick" }
const NO_SESSION = (via = direct()): KeyExchangeInput => ({ _tag: "NoSession", via })

// --- the table -------------------------------------------------------------------------------------------

interface Row {
  readonly name: string
  readonly peer: PeerState
  readonly input: KeyExchangeInput
  readonly at: number
  readonly context?: Partial<DecisionContext>
  readonly actions: ReadonlyArray<Action>
  /** Fields the new state must match; `"unchanged"`: the very same state object comes back. */
  readonly state: "unchanged" | Record<string, unknown>
}

const installedAt1000 = peer({ session: session({ installedAtMs: 1000, lastDecryptMs: 1000 }), rekey: { attempts: 1, lastSentMs: 900 } })
const keepaliveCase = peer({ session: session({ lastDecryptMs: 10_000 }), rekey: { attempts: 1, lastSentMs: 9_000 } })
const pendingRekey = { attempts: 1, lastSentMs: 0 }

const rows: ReadonlyArray<Row> = [
  // §4.4 — installing, duplicates, keepalives, rekeys
  {
    name: "first PILA: installs, Info log, tunnel.established, reply, hook; the install counts as liveness",
    peer: EMPTY_PEER,
    input: pila(KEY_A, direct(EP)),
    at: 1000,
    actions: [
      installs(KEY_A),
      learn(EP),
      logAt("Info", "established"),
      established(true, false, false),
      answer("reply"),
      hook(false, false)
    ],
    state: {
      session: { id: 7, peerX25519: KEY_A, authenticated: true, viaRelay: false, installedAtMs: 1000, lastDecryptMs: 1000 },
      endpoint: EP,
      rekey: undefined
    }
  },
  {
    name: "same key within 250 ms (direct copy): one Debug line, no other effect, state untouched",
    peer: installedAt1000,
    input: pila(KEY_A),
    at: 1249,
    actions: [logAt("Debug")],
    state: "unchanged"
  },
  {
    name: "same key within 250 ms (the relay copy): one Debug line, no other effect, state untouched",
    peer: installedAt1000,
    input: pila(KEY_A, RELAY),
    at: 1100,
    actions: [logAt("Debug")],
    state: "unchanged"
  },
  {
    name: "same key at exactly 250 ms is no longer a duplicate: Debug, event and hook, no install, no reply",
    peer: installedAt1000,
    input: pila(KEY_A),
    at: 1250,
    actions: [logAt("Debug"), established(true, false, false), hook(false, false)],
    state: { session: installedAt1000.session, rekey: undefined }
  },
  {
    name: "same key past the debounce (keepalive): Debug, event and hook; same session object; liveness untouched",
    peer: keepaliveCase,
    input: pila(KEY_A),
    at: 14_000,
    actions: [logAt("Debug"), established(true, false, false), hook(false, false)],
    state: { session: keepaliveCase.session, rekey: undefined }
  },
  {
    name: "asymmetric recovery: same key, nothing decrypted for > 6 s → our PILA again, without re-installing",
    peer: keepaliveCase,
    input: pila(KEY_A),
    at: 16_001,
    actions: [logAt("Debug"), established(true, false, false), answer("recovery"), hook(false, false)],
    state: { session: { id: 3, installedAtMs: 0, lastDecryptMs: 10_000, lastRecoveryReplyMs: 16_001 }, rekey: undefined }
  },
  {
    name: "asymmetric recovery: exactly 6 s without a decrypt is not stale yet",
    peer: keepaliveCase,
    input: pila(KEY_A),
    at: 16_000,
    actions: [logAt("Debug"), established(true, false, false), hook(false, false)],
    state: { session: keepaliveCase.session }
  },
  {
    name: "asymmetric recovery gate: 999 ms after the last recovery reply → no reply",
    peer: peer({ session: session({ lastRecoveryReplyMs: 20_000 }) }),
    input: pila(KEY_A),
    at: 20_999,
    actions: [logAt("Debug"), established(true, false, false), hook(false, false)],
    state: { session: { lastRecoveryReplyMs: 20_000 } }
  },
  {
    name: "asymmetric recovery gate: 1 s after the last recovery reply → reply again",
    peer: peer({ session: session({ lastRecoveryReplyMs: 20_000 }) }),
    input: pila(KEY_A),
    at: 21_000,
    actions: [logAt("Debug"), established(true, false, false), answer("recovery"), hook(false, false)],
    state: { session: { id: 3, lastRecoveryReplyMs: 21_000 } }
  },
  {
    name: "changed key: rekey — install, Info 'peer rekeyed', event and hook with rekeyed, reply",
    peer: peer({ session: session() }),
    input: pila(KEY_B),
    at: 50_000,
    actions: [installs(KEY_B), logAt("Info", "rekeyed"), established(true, false, true), answer("reply"), hook(false, true)],
    state: { session: { id: 7, peerX25519: KEY_B, installedAtMs: 50_000, lastDecryptMs: 50_000 } }
  },
  {
    name: "changed key even within 250 ms of the install is a rekey, not a duplicate",
    peer: installedAt1000,
    input: pila(KEY_B),
    at: 1100,
    actions: [installs(KEY_B), logAt("Info", "rekeyed"), established(true, false, true), answer("reply"), hook(false, true)],
    state: { session: { id: 7, peerX25519: KEY_B } }
  },
  {
    name: "changed key passes even when the crypto table is full (the peer already holds its slot)",
    peer: peer({ session: session() }),
    input: pila(KEY_B),
    at: 50_000,
    context: { sessionRoom: false },
    actions: [installs(KEY_B), logAt("Info", "rekeyed"), established(true, false, true), answer("reply"), hook(false, true)],
    state: { session: { id: 7 } }
  },
  {
    name: "first key while the crypto table is full: RejectTableFull, nothing to derive",
    peer: peer({ pending: packets(2) }),
    input: pila(KEY_A),
    at: 0,
    context: { sessionRoom: false },
    actions: [{ _tag: "RejectTableFull", table: "sessions" }],
    state: "unchanged"
  },
  // §4.1 — PILK
  {
    name: "PILK from a node the registry knows: answered with our PILA (marked pending), not accepted",
    peer: peer(),
    input: pilk(true),
    at: 500,
    actions: [logAt("Debug", "PILK"), answer("key_request_answer")],
    state: { session: undefined, rekey: { attempts: 1, lastSentMs: 500 } }
  },
  {
    name: "PILK from a known node while we hold a session: answered with our PILA, session kept",
    peer: peer({ session: session() }),
    input: pilk(true, KEY_B),
    at: 500,
    actions: [logAt("Debug", "PILK"), answer("key_request_answer")],
    state: { session: session(), rekey: { attempts: 1, lastSentMs: 500 } }
  },
  {
    name: "PILK from a node the registry does not know: accepted, unauthenticated",
    peer: peer(),
    input: pilk(false),
    at: 500,
    actions: [installs(KEY_A), logAt("Info", "established"), established(false, false, false), answer("reply"), hook(false, false)],
    state: { session: { id: 7, authenticated: false } }
  },
  {
    name: "PILK never moves a known endpoint (its source is unauthenticated); the reply goes to its source",
    peer: peer(),
    input: pilk(false, KEY_A, direct(EP2)),
    at: 500,
    actions: [installs(KEY_A), logAt("Info", "established"), established(false, false, false), answer("reply", EP2), hook(false, false)],
    state: { endpoint: EP }
  },
  {
    name: "PILK key request from a new address: answered at its source, the endpoint kept",
    peer: peer(),
    input: pilk(true, KEY_A, direct(EP2)),
    at: 500,
    actions: [logAt("Debug", "PILK"), answer("key_request_answer", EP2)],
    state: { endpoint: EP, rekey: { attempts: 1, lastSentMs: 500 } }
  },
  {
    name: "PILK with another key never replaces an authenticated session",
    peer: peer({ session: session() }),
    input: pilk(false, KEY_B),
    at: 50_000,
    actions: [logAt("Debug", "refused")],
    state: "unchanged"
  },
  {
    name: "same-key PILA upgrades a PILK session to authenticated without re-installing",
    peer: peer({ session: session({ authenticated: false }) }),
    input: pila(KEY_A),
    at: 5_000,
    actions: [logAt("Debug"), established(true, false, false), hook(false, false)],
    state: { session: { id: 3, authenticated: true, installedAtMs: 0 } }
  },
  // §4.5 — outbound packets without a key, the pending queue
  {
    name: "outbound without a key: queued, key exchange initiated (no key request on the first send)",
    peer: peer(),
    input: outbound(1),
    at: 0,
    actions: [send("initiate")],
    state: { pending: packets(1, 1), rekey: { attempts: 1, lastSentMs: 0 } }
  },
  {
    name: "outbound while a key exchange is pending: queued only (SYN retransmits must not burn attempts)",
    peer: peer({ pending: packets(1, 1), rekey: pendingRekey }),
    input: outbound(2),
    at: 250,
    actions: [],
    state: { pending: packets(2, 1), rekey: pendingRekey }
  },
  {
    name: "pending queue full: the newest packet is dropped (typed) and a warning logged",
    peer: peer({ pending: packets(MAX_PENDING_PER_PEER), rekey: pendingRekey }),
    input: outbound(200),
    at: 1_000,
    actions: [drop("pending_full"), logAt("Warning", "pending queue full")],
    state: { pending: packets(MAX_PENDING_PER_PEER), lastPendingDropLogMs: 1_000 }
  },
  {
    name: "pending queue full again within 5 s: dropped (typed), not logged",
    peer: peer({ pending: packets(MAX_PENDING_PER_PEER), rekey: pendingRekey, lastPendingDropLogMs: 1_000 }),
    input: outbound(201),
    at: 5_999,
    actions: [drop("pending_full")],
    state: "unchanged"
  },
  {
    name: "pending queue full 5 s after the last warning: warned again",
    peer: peer({ pending: packets(MAX_PENDING_PER_PEER), rekey: pendingRekey, lastPendingDropLogMs: 1_000 }),
    input: outbound(202),
    at: 6_000,
    actions: [drop("pending_full"), logAt("Warning", "pending queue full")],
    state: { lastPendingDropLogMs: 6_000 }
  },
  {
    name: "pending-peers bound reached: a new queue is refused (typed), the key exchange still starts",
    peer: peer(),
    input: outbound(1),
    at: 0,
    context: { pendingPeerRoom: false },
    actions: [drop("pending_peers_full"), send("initiate")],
    state: { pending: [], rekey: { attempts: 1, lastSentMs: 0 } }
  },
  {
    name: "peer table full: a new peer without a session is refused (typed)",
    peer: EMPTY_PEER,
    input: outbound(1),
    at: 0,
    context: { peerRoom: false },
    actions: [drop("peer_table_full")],
    state: "unchanged"
  },
  {
    name: "the queue is flushed in order on install, after our reply",
    peer: peer({ pending: packets(3, 10), rekey: { attempts: 2, lastSentMs: 4_000 } }),
    input: pila(KEY_A),
    at: 5_000,
    actions: [
      installs(KEY_A),
      logAt("Info", "established"),
      established(true, false, false),
      answer("reply"),
      hook(false, false),
      { _tag: "SendPackets", packets: packets(3, 10) }
    ],
    state: { pending: [], rekey: undefined }
  },
  {
    name: "outbound while the shell lagged behind an install: sent at once",
    peer: peer({ session: session() }),
    input: outbound(9),
    at: 0,
    actions: [{ _tag: "SendPackets", packets: packets(1, 9) }],
    state: "unchanged"
  },
  // §4.5 — retransmission, key request, relay fallback, give-up, cooldown
  {
    name: "tick before 4 s: nothing to retransmit",
    peer: peer({ relay: true, rekey: pendingRekey }),
    input: TICK,
    at: 3_999,
    actions: [],
    state: "unchanged"
  },
  {
    name: "retransmit at 4 s with no session: PILA plus the PILK key request (1 unanswered send)",
    peer: peer({ relay: true, rekey: pendingRekey }),
    input: TICK,
    at: 4_000,
    actions: [send("retransmit", true, "relay")],
    state: { rekey: { attempts: 2, lastSentMs: 4_000 } }
  },
  {
    name: "retransmit while we hold a session: no key request",
    peer: peer({ relay: true, session: session(), rekey: pendingRekey }),
    input: TICK,
    at: 4_000,
    actions: [send("retransmit", false, "relay")],
    state: { rekey: { attempts: 2, lastSentMs: 4_000 } }
  },
  {
    name: "second attempt falls back to the relay and restarts the attempt count",
    peer: peer({ rekey: pendingRekey }),
    input: TICK,
    at: 4_000,
    actions: [setRelay(true), logAt("Info", "relay"), send("retransmit", true, "relay")],
    state: { relay: true, rekey: { attempts: 1, lastSentMs: 4_000 } }
  },
  {
    name: "attempt 6 is still sent",
    peer: peer({ relay: true, rekey: { attempts: 5, lastSentMs: 16_000 } }),
    input: TICK,
    at: 20_000,
    actions: [send("retransmit", true, "relay")],
    state: { rekey: { attempts: 6, lastSentMs: 20_000 } }
  },
  {
    name: "give-up after 6 unanswered attempts: event, queue discarded, path reset, 5 s cooldown",
    peer: peer({ relay: true, rekey: { attempts: 6, lastSentMs: 20_000 }, pending: packets(2) }),
    input: TICK,
    at: 24_000,
    actions: [
      logAt("Warning", "gave up"),
      { _tag: "Emit", event: { name: "tunnel.rekey_gave_up", attempts: 6 } },
      { _tag: "DropPending", count: 2, reason: "rekey_gave_up" },
      { _tag: "ResetPath" }
    ],
    state: { rekey: undefined, pending: [], cooldownUntilMs: 29_000, lastPathResetMs: 24_000 }
  },
  {
    name: "give-up resets the path at most once per 30 s",
    peer: peer({ relay: true, rekey: { attempts: 6, lastSentMs: 20_000 }, lastPathResetMs: 24_000 - 29_999 }),
    input: TICK,
    at: 24_000,
    actions: [logAt("Warning", "gave up"), { _tag: "Emit", event: { name: "tunnel.rekey_gave_up", attempts: 6 } }],
    state: { cooldownUntilMs: 29_000, lastPathResetMs: 24_000 - 29_999 }
  },
  {
    name: "a due retransmit waits while the tick's budget is spent",
    peer: peer({ relay: true, rekey: pendingRekey }),
    input: TICK,
    at: 8_000,
    context: { mayRetransmit: false },
    actions: [],
    state: "unchanged"
  },
  {
    name: "during the give-up cooldown outbound packets fail fast (typed), nothing queued or sent",
    peer: peer({ cooldownUntilMs: 29_000 }),
    input: outbound(1),
    at: 28_999,
    actions: [drop("rekey_cooldown")],
    state: "unchanged"
  },
  {
    name: "once the cooldown is over, outbound starts a new key exchange",
    peer: peer({ cooldownUntilMs: 29_000 }),
    input: outbound(1),
    at: 29_000,
    actions: [send("initiate")],
    state: { cooldownUntilMs: undefined, pending: packets(1, 1), rekey: { attempts: 1 } }
  },
  {
    name: "a tick ends an expired cooldown",
    peer: peer({ cooldownUntilMs: 29_000 }),
    input: TICK,
    at: 29_000,
    actions: [],
    state: { cooldownUntilMs: undefined }
  },
  {
    name: "a successful decrypt lifts the cooldown and the pending key exchange, records liveness, delivers",
    peer: peer({ session: session(), cooldownUntilMs: 33_000, rekey: { attempts: 2, lastSentMs: 29_000 } }),
    input: decrypted(),
    at: 30_000,
    actions: [DELIVER],
    state: { cooldownUntilMs: undefined, rekey: undefined, session: { lastDecryptMs: 30_000 } }
  },
  // §4.3 — decrypt side effects: endpoint learning, identity binding, keepalives
  {
    name: "a decrypted PILS (authenticated and fresh) from a new address moves the endpoint (NAT remap)",
    peer: peer({ session: session() }),
    input: decrypted(dataPacket(), direct(EP2)),
    at: 1_000,
    actions: [learn(EP2), DELIVER],
    state: { endpoint: EP2 }
  },
  {
    name: "a NAT keepalive from a new address moves the endpoint too (the remap of a peer with nothing to say)",
    peer: peer({ session: session() }),
    input: decrypted(keepalive(), direct(EP2)),
    at: 1_000,
    actions: [learn(EP2)],
    state: { endpoint: EP2, session: { lastDecryptMs: 1_000 } }
  },
  {
    name: "a relayed packet teaches no endpoint",
    peer: peer({ session: session() }),
    input: decrypted(dataPacket(), RELAY),
    at: 1_000,
    actions: [DELIVER],
    state: { endpoint: EP, session: { lastDecryptMs: 1_000 } }
  },
  {
    name: "identity binding: a spoofed inner source is dropped with security.src_spoofed, no liveness",
    peer: peer({ session: session({ decryptFailures: 2 }), rekey: pendingRekey }),
    input: decrypted(dataPacket(OTHER_NODE), direct(EP2)),
    at: 1_000,
    actions: [logAt("Debug", `${OTHER_NODE}`), { _tag: "Emit", event: { name: "security.src_spoofed", claimedNode: OTHER_NODE } }],
    state: { endpoint: EP, rekey: pendingRekey, session: { lastDecryptMs: 0, decryptFailures: 0 } }
  },
  {
    name: "a NAT keepalive records liveness and is not delivered",
    peer: peer({ session: session() }),
    input: decrypted(keepalive()),
    at: 1_000,
    actions: [],
    state: { session: { lastDecryptMs: 1_000 } }
  },
  {
    name: "a legacy keepalive (Src.Node 0) records liveness and is not delivered",
    peer: peer({ session: session() }),
    input: decrypted(keepalive(0)),
    at: 1_000,
    actions: [],
    state: { session: { lastDecryptMs: 1_000 } }
  },
  {
    name: "a data packet with Src.Node 0 is spoofed (the legacy exception covers keepalives only)",
    peer: peer({ session: session() }),
    input: decrypted(dataPacket(0)),
    at: 1_000,
    actions: [logAt("Debug", "0"), { _tag: "Emit", event: { name: "security.src_spoofed", claimedNode: 0 } }],
    state: { session: { lastDecryptMs: 0 } }
  },
  {
    name: "a decrypt under a replaced session is ignored (compare-and-act)",
    peer: peer({ session: session() }),
    input: decrypted(dataPacket(), direct(), 2),
    at: 1_000,
    actions: [],
    state: "unchanged"
  },
  {
    name: "a frame of a new epoch restarts the epoch clock and clears the window faults",
    peer: peer({ session: session({ windowRejections: { replay: 3, outside_window: 2 } }) }),
    input: decrypted(dataPacket(), direct(), 3, "new"),
    at: 9_000,
    actions: [DELIVER],
    state: { session: { newestEpochAtMs: 9_000, windowRejections: { replay: 0, outside_window: 0 } } }
  },
  {
    name: "a straggler of an older epoch clears AEAD failures but not the newest epoch's window faults",
    peer: peer({ session: session({ decryptFailures: 3, windowRejections: { replay: 3, outside_window: 2 } }) }),
    input: decrypted(dataPacket(), direct(), 3, "older"),
    at: 9_000,
    actions: [DELIVER],
    state: { session: { newestEpochAtMs: 0, decryptFailures: 0, windowRejections: { replay: 3, outside_window: 2 } } }
  },
  // §4.3 step 5 — drop gates
  {
    name: "AEAD failure below the threshold: counted only",
    peer: peer({ session: session({ decryptFailures: 3, lastDecryptMs: 9_900 }) }),
    input: rejected("auth_failed"),
    at: 10_000,
    actions: [],
    state: { session: { decryptFailures: 4 } }
  },
  {
    name: "5th AEAD failure past the 3 s grace: session dropped, key requested (PILA + PILK)",
    peer: peer({ session: session({ decryptFailures: 4, lastDecryptMs: 9_900 }) }),
    input: rejected("auth_failed"),
    at: 10_000,
    actions: [dropSession("decrypt_failures"), logAt("Info", "dropped"), send("rekey_request", true)],
    state: { session: undefined, rekey: { attempts: 1, lastSentMs: 10_000 }, lastRekeyRequestMs: 10_000 }
  },
  {
    name: "5th AEAD failure within 3 s of the install: kept (frames in flight under the old key)",
    peer: peer({ session: session({ installedAtMs: 7_001, decryptFailures: 4, lastDecryptMs: 9_900 }) }),
    input: rejected("auth_failed"),
    at: 10_000,
    actions: [],
    state: { session: { id: 3, decryptFailures: 5 } }
  },
  {
    name: "5th replay rejection 1 s into the newest epoch: session dropped, key requested",
    peer: peer({ session: session({ newestEpochAtMs: 9_000, lastDecryptMs: 9_990, windowRejections: { replay: 4, outside_window: 0 } }) }),
    input: rejected("replay"),
    at: 10_000,
    actions: [dropSession("replay"), logAt("Info", "dropped"), send("rekey_request", true)],
    state: { session: undefined }
  },
  {
    name: "5th outside-window rejection within 1 s of the newest epoch: kept",
    peer: peer({ session: session({ newestEpochAtMs: 9_001, lastDecryptMs: 9_990, windowRejections: { replay: 0, outside_window: 4 } }) }),
    input: rejected("outside_window"),
    at: 10_000,
    actions: [],
    state: { session: { windowRejections: { replay: 0, outside_window: 5 } } }
  },
  {
    name: "a peer quiet for a minute: one outside-window rejection drops at once (it restarted)",
    peer: peer({ session: session({ lastDecryptMs: 0 }) }),
    input: rejected("outside_window"),
    at: 60_000,
    actions: [dropSession("quiet_peer_rejected"), logAt("Info", "dropped"), send("rekey_request", true)],
    state: { session: undefined }
  },
  {
    name: "replay guard exhausted: session dropped at once",
    peer: peer({ session: session({ lastDecryptMs: 9_990 }) }),
    input: rejected("epochs_exhausted"),
    at: 10_000,
    actions: [dropSession("epochs_exhausted"), logAt("Info", "dropped"), send("rekey_request", true)],
    state: { session: undefined }
  },
  {
    name: "the key request after a drop is rate-limited to one per 3 s",
    peer: peer({ session: session({ decryptFailures: 4, lastDecryptMs: 9_900 }), lastRekeyRequestMs: 7_001 }),
    input: rejected("auth_failed"),
    at: 10_000,
    actions: [dropSession("decrypt_failures"), logAt("Info", "dropped")],
    state: { session: undefined, rekey: undefined }
  },
  {
    name: "a rejection under a replaced session is ignored",
    peer: peer({ session: session({ id: 4, decryptFailures: 4 }) }),
    input: rejected("auth_failed"),
    at: 10_000,
    actions: [],
    state: "unchanged"
  },
  // §4.3 — PILS without a session (maybeRequestRekey)
  {
    name: "PILS without a session: PILA + PILK key request, the missing endpoint filled in",
    peer: EMPTY_PEER,
    input: NO_SESSION(direct(EP)),
    at: 1_000,
    actions: [learn(EP), send("rekey_request", true)],
    state: { endpoint: EP, rekey: { attempts: 1, lastSentMs: 1_000 }, lastRekeyRequestMs: 1_000 }
  },
  {
    name: "PILS without a session: at most one key request per 3 s",
    peer: peer({ lastRekeyRequestMs: 1_000 }),
    input: NO_SESSION(),
    at: 3_999,
    actions: [],
    state: "unchanged"
  },
  {
    name: "PILS without a session never moves a known endpoint (its source is unauthenticated)",
    peer: peer(),
    input: NO_SESSION(direct(EP2)),
    at: 1_000,
    actions: [send("rekey_request", true)],
    state: { endpoint: EP }
  },
  {
    name: "PILS without a session from the relay, no endpoint known: the peer is admitted to the relay",
    peer: EMPTY_PEER,
    input: NO_SESSION(RELAY),
    at: 1_000,
    actions: [setRelay(true), send("rekey_request", true, "relay")],
    state: { relay: true }
  },
  {
    name: "PILS without a session from an unknown peer while the table is full: refused",
    peer: EMPTY_PEER,
    input: NO_SESSION(),
    at: 1_000,
    context: { peerRoom: false },
    actions: [{ _tag: "RejectTableFull", table: "peers" }],
    state: "unchanged"
  },
  // Relay handling of key exchanges
  {
    name: "first PILA via the relay, no endpoint known: key marked via relay, relay admitted, reply via relay",
    peer: EMPTY_PEER,
    input: pila(KEY_A, RELAY),
    at: 1_000,
    actions: [
      installs(KEY_A),
      setRelay(true),
      logAt("Info", "established"),
      established(true, true, false),
      send("reply", false, "relay"),
      hook(true, false)
    ],
    state: { session: { viaRelay: true }, relay: true, endpoint: undefined }
  },
  {
    name: "first PILA via the relay while a direct endpoint is known: no relay flip, reply direct",
    peer: peer(),
    input: pila(KEY_A, RELAY),
    at: 1_000,
    actions: [installs(KEY_A), logAt("Info", "established"), established(true, true, false), send("reply"), hook(true, false)],
    state: { session: { viaRelay: true }, relay: false, endpoint: EP }
  },
  // A PILA is authenticated but not fresh: from a new address it is answered there, never learned
  {
    name: "same-key PILA from a new address (a replay): no LearnEndpoint, nothing sent while the session is live",
    peer: peer({ session: session({ lastDecryptMs: 3_000 }) }),
    input: pila(KEY_A, direct(EP2)),
    at: 4_000,
    actions: [logAt("Debug"), established(true, false, false), hook(false, false)],
    state: { endpoint: EP, session: { lastDecryptMs: 3_000 } }
  },
  {
    name: "same-key PILA from a new address on a stale session: the recovery reply goes to its source, endpoint kept",
    peer: keepaliveCase,
    input: pila(KEY_A, direct(EP2)),
    at: 16_001,
    actions: [logAt("Debug"), established(true, false, false), answer("recovery", EP2), hook(false, false)],
    state: { endpoint: EP, session: { lastRecoveryReplyMs: 16_001 } }
  },
  {
    name: "new-key PILA from a new address (restart on a new port): installed, reply to its source, endpoint kept",
    peer: peer({ session: session() }),
    input: pila(KEY_B, direct(EP2)),
    at: 50_000,
    actions: [installs(KEY_B), logAt("Info", "rekeyed"), established(true, false, true), answer("reply", EP2), hook(false, true)],
    state: { endpoint: EP, session: { id: 7, peerX25519: KEY_B } }
  },
  {
    name: "direct path restored: the relay flag is cleared",
    peer: peer({ relay: true }),
    input: { _tag: "DirectPathRestored" },
    at: 0,
    actions: [setRelay(false)],
    state: { relay: false }
  },
  {
    name: "direct path restored on a direct peer: no flip to report",
    peer: peer(),
    input: { _tag: "DirectPathRestored" },
    at: 0,
    actions: [],
    state: "unchanged"
  },
  {
    name: "direct path silent: the peer goes to the relay",
    peer: peer(),
    input: { _tag: "DirectPathSilent" },
    at: 0,
    actions: [setRelay(true)],
    state: { relay: true }
  },
  {
    name: "direct path silent on a relayed peer: no flip to report",
    peer: peer({ relay: true }),
    input: { _tag: "DirectPathSilent" },
    at: 0,
    actions: [],
    state: "unchanged"
  },
  // Derivation failure and removal
  {
    name: "the shell could not derive the session: it is dropped",
    peer: peer({ session: session() }),
    input: { _tag: "InstallFailed", session: 3 },
    at: 0,
    actions: [dropSession("install_failed"), logAt("Warning")],
    state: { session: undefined }
  },
  {
    name: "RemovePeer wipes every per-peer fact",
    peer: peer({
      session: session(),
      relay: true,
      pending: packets(2),
      rekey: pendingRekey,
      cooldownUntilMs: 9_000,
      lastRekeyRequestMs: 1,
      lastPathResetMs: 1,
      lastPendingDropLogMs: 1
    }),
    input: { _tag: "RemovePeer" },
    at: 5_000,
    actions: [dropSession("peer_removed"), { _tag: "DropPending", count: 2, reason: "peer_removed" }],
    state: { ...EMPTY_PEER }
  }
]

describe("decideKeyExchange", () => {
  for (const row of rows) {
    it(row.name, () => {
      const { actions, state } = decideKeyExchange(row.peer, row.input, context(row.at, row.context))
      expect(actions).toEqual(row.actions)
      if (row.state === "unchanged") expect(state).toBe(row.peer)
      else expect(state).toMatchObject(row.state)
    })
  }

  it("keeps its own copy of the installed key, never a view of the receive buffer", () => {
    const datagram = new Uint8Array(40)
    datagram.set(KEY_A, 8)
    const { actions, state } = decideKeyExchange(EMPTY_PEER, pila(datagram.subarray(8)), context(0))
    datagram.fill(0) // the socket reuses its buffer
    expect(state.session?.peerX25519).toEqual(KEY_A)
    expect(actions[0]).toEqual(installs(KEY_A))
    const again = decideKeyExchange(state, pila(KEY_A), context(10_000))
    expect(again.actions.map((a) => a._tag)).not.toContain("InstallSession")
  })

  it("a session survives any number of same-key keepalives with its id, install time and liveness intact", () => {
    let state = peer({ session: session({ lastDecryptMs: 5_000 }) })
    const installed = state.session
    for (let at = 4_000; at <= 40_000; at += 4_000) {
      const decision = decideKeyExchange(state, pila(KEY_A, at % 8_000 === 0 ? RELAY : direct()), context(at))
      expect(decision.actions.map((a) => a._tag)).not.toContain("InstallSession")
      state = decision.state
    }
    expect(state.session).toMatchObject({ id: installed?.id, installedAtMs: 0, lastDecryptMs: 5_000 })
  })

  it("a replayed PILA never redirects the peer: the replayer gets at most one PILA a second, the peer's next PILS moves the endpoint", () => {
    const ATTACKER = "192.0.2.66:6666"
    let state = peer({ session: session({ lastDecryptMs: 10_000 }) })
    const run = (input: KeyExchangeInput, at: number) => {
      const decision = decideKeyExchange(state, input, context(at))
      state = decision.state
      return decision.actions
    }
    const answeredAt: Array<number> = []
    for (let at = 10_100; at <= 20_000; at += 100) {
      const actions = run(pila(KEY_A, direct(ATTACKER)), at)
      expect(actions.filter((a) => a._tag === "LearnEndpoint" || a._tag === "SendPackets" || a._tag === "InstallSession")).toEqual([])
      for (const action of actions.filter((a) => a._tag === "SendKeyExchange")) {
        expect(action).toEqual(answer("recovery", ATTACKER))
        answeredAt.push(at)
      }
    }
    // Stale only after 6 s without a decrypt, then gated to one recovery reply per second.
    expect(answeredAt).toEqual([16_100, 17_100, 18_100, 19_100])
    expect(state.endpoint).toBe(EP)
    // The real peer's NAT remapped: its next PILS moves the endpoint and makes the session live again.
    expect(run(decrypted(dataPacket(), direct(EP2)), 20_050)).toEqual([learn(EP2), DELIVER])
    expect(state.endpoint).toBe(EP2)
    expect(run(pila(KEY_A, direct(ATTACKER)), 21_500)).toEqual([logAt("Debug"), established(true, false, false), hook(false, false)])
    expect(state.endpoint).toBe(EP2)
  })

  it("first contact: unanswered sends escalate to PILA + PILK, then give up after 6 attempts (7 with the relay flip)", () => {
    let state = peer()
    const sends: Array<Action> = []
    const run = (input: KeyExchangeInput, at: number) => {
      const decision = decideKeyExchange(state, input, context(at))
      state = decision.state
      return decision.actions
    }
    sends.push(...run(outbound(1), 0).filter((a) => a._tag === "SendKeyExchange"))
    let gaveUpAt: number | undefined
    for (let at = 1_000; at <= 60_000 && gaveUpAt === undefined; at += 1_000) {
      const actions = run(TICK, at)
      sends.push(...actions.filter((a) => a._tag === "SendKeyExchange"))
      if (actions.some((a) => a._tag === "Emit" && a.event.name === "tunnel.rekey_gave_up")) gaveUpAt = at
    }
    expect(sends).toEqual([
      send("initiate"),
      ...Array.from({ length: 6 }, () => send("retransmit", true, "relay"))
    ])
    expect(gaveUpAt).toBe(28_000)
    expect(state).toMatchObject({ rekey: undefined, pending: [], cooldownUntilMs: 33_000 })
    expect(run(outbound(2), 32_999)).toEqual([drop("rekey_cooldown")])
  })
})

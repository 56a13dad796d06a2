/**
 * The per-peer table around the key-exchange core (key-exchange.ts): one `PeerState` per node ID, hard
 * bounds on everything a remote party or a busy application can grow (DESIGN.md §4 rule 8), and the
 * counters of every overflow. Pure like the core: no I/O, no clock; the shell calls `step` for each input
 * and `tick` on a timer, and performs the returned actions.
 *
 * Bounds and their policies:
 * - Sessions ≤ `maxCryptoPeers` (`MaxCryptoPeers`). A first key beyond it gets `RejectTableFull` before the
 *   shell derives anything, so a flood of key exchanges costs no scalar multiplication. A rekey of a peer
 *   already in the table is always allowed.
 * - Peers without a session (waiting for a key, cooling down) enter only while fewer than
 *   `maxSessionlessPeers` are held, so spoofed PILS/PILK floods cannot crowd out sessions; they leave on
 *   their own once nothing is pending (give-up + cooldown ≈ 30 s at most). All entries together stay below
 *   `maxCryptoPeers + maxSessionlessPeers`.
 * - Peers with queued packets ≤ `maxPendingPeers`; packets per peer ≤ `MAX_PENDING_PER_PEER` (the core).
 * - Retransmits (and give-ups) ≤ `maxRetransmitsPerTick` per tick; the peers served go to the back of the
 *   line so a burst is worked off in turn.
 *
 * `RemovePeer` deletes the entry and with it every per-peer fact (relay flag, rekey state, cooldown, rate
 * stamps): a recycled node ID starts from nothing (§14.11). The registry-key cache (peer-keys.ts) is a
 * separate structure; the shell forgets the node there too.
 */
import {
  type Action,
  decideKeyExchange,
  EMPTY_PEER,
  isDisposable,
  isRekeyDue,
  type KeyExchangeInput,
  type PacketDropReason,
  type PeerState,
  type SessionId
} from "./key-exchange.ts"

export const MAX_CRYPTO_PEERS = 16_384
/** Matches the reference's 4096-entry rekey-request rate map. */
export const MAX_SESSIONLESS_PEERS = 4_096
export const MAX_PENDING_PEERS = 256
export const MAX_RETRANSMITS_PER_TICK = 64

export interface PeerTableLimits {
  readonly maxCryptoPeers: number
  readonly maxSessionlessPeers: number
  readonly maxPendingPeers: number
  readonly maxRetransmitsPerTick: number
}

export const DEFAULT_PEER_TABLE_LIMITS: PeerTableLimits = {
  maxCryptoPeers: MAX_CRYPTO_PEERS,
  maxSessionlessPeers: MAX_SESSIONLESS_PEERS,
  maxPendingPeers: MAX_PENDING_PEERS,
  maxRetransmitsPerTick: MAX_RETRANSMITS_PER_TICK
}

export interface PeerActions {
  readonly nodeId: number
  readonly actions: ReadonlyArray<Action>
}

export interface PeerTableCounters {
  /** Outbound packets refused, by reason. */
  readonly packetDrops: Record<PacketDropReason, number>
  /** Queued packets discarded (give-up, removal). */
  readonly pendingDiscarded: number
  /** `RejectTableFull` answers, by table. */
  readonly tableFull: { readonly sessions: number; readonly peers: number }
}

const TICK: KeyExchangeInput = { _tag: "Tick" }

export class PeerTable {
  readonly #limits: PeerTableLimits
  readonly #peers = new Map<number, PeerState>()
  /** Peers whose state can change with time alone: no session, or a key exchange pending. */
  readonly #watched = new Set<number>()
  #sessions = 0
  #pendingPeers = 0
  #nextSessionId: SessionId = 1
  readonly #counters = {
    packetDrops: { rekey_cooldown: 0, pending_full: 0, pending_peers_full: 0, peer_table_full: 0 },
    pendingDiscarded: 0,
    tableFull: { sessions: 0, peers: 0 }
  }

  constructor(limits: PeerTableLimits = DEFAULT_PEER_TABLE_LIMITS) {
    const { maxCryptoPeers, maxPendingPeers, maxRetransmitsPerTick, maxSessionlessPeers } = limits
    if (!(maxCryptoPeers >= 1 && maxSessionlessPeers >= 1 && maxPendingPeers >= 1 && maxRetransmitsPerTick >= 1)) {
      throw new RangeError(`invalid peer table limits ${JSON.stringify(limits)}`)
    }
    this.#limits = limits
  }

  /** Feeds one input about `nodeId` to the core and returns the actions to perform, in order. */
  step(nodeId: number, input: KeyExchangeInput, nowMs: number): ReadonlyArray<Action> {
    return this.#run(nodeId, input, nowMs, true)
  }

  /**
   * Lets time pass for every peer that has time-based work: due retransmits (within the per-tick budget),
   * give-ups, cooldown ends, and forgetting peers left with nothing. Call it every second or so; the core
   * retransmits once `REKEY_RETRANSMIT_INTERVAL_MS` has passed since the last send.
   */
  tick(nowMs: number): ReadonlyArray<PeerActions> {
    const out: Array<PeerActions> = []
    let budget = this.#limits.maxRetransmitsPerTick
    // A snapshot: `#run` re-inserts served peers at the back of the set.
    for (const nodeId of [...this.#watched]) {
      const due = isRekeyDue(this.#peers.get(nodeId)!, nowMs)
      const actions = this.#run(nodeId, TICK, nowMs, budget > 0)
      if (due && budget > 0) {
        budget--
        if (this.#watched.delete(nodeId)) this.#watched.add(nodeId)
      }
      if (actions.length > 0) out.push({ nodeId, actions })
    }
    return out
  }

  get(nodeId: number): PeerState | undefined {
    return this.#peers.get(nodeId)
  }

  entries(): IterableIterator<[number, PeerState]> {
    return this.#peers.entries()
  }

  /** Peers held (bounded by `maxCryptoPeers + maxSessionlessPeers`). */
  get size(): number {
    return this.#peers.size
  }

  /** Peers with an installed session (bounded by `maxCryptoPeers`). */
  get sessions(): number {
    return this.#sessions
  }

  /** Peers with queued packets (bounded by `maxPendingPeers`). */
  get pendingPeers(): number {
    return this.#pendingPeers
  }

  /** A live view of the overflow counters. */
  get counters(): PeerTableCounters {
    return this.#counters
  }

  #run(nodeId: number, input: KeyExchangeInput, nowMs: number, mayRetransmit: boolean): ReadonlyArray<Action> {
    const held = this.#peers.get(nodeId)
    const peer = held ?? EMPTY_PEER
    const limits = this.#limits
    const totalRoom = held !== undefined || this.#peers.size < limits.maxCryptoPeers + limits.maxSessionlessPeers
    const { actions, state } = decideKeyExchange(peer, input, {
      nodeId,
      nowMs,
      nextSessionId: this.#nextSessionId,
      sessionRoom: this.#sessions < limits.maxCryptoPeers && totalRoom,
      peerRoom: held !== undefined || (this.#peers.size - this.#sessions < limits.maxSessionlessPeers && totalRoom),
      pendingPeerRoom: peer.pending.length > 0 || this.#pendingPeers < limits.maxPendingPeers,
      mayRetransmit
    })
    if (state.session?.id === this.#nextSessionId) this.#nextSessionId++
    this.#sessions += Number(state.session !== undefined) - Number(peer.session !== undefined)
    this.#pendingPeers += Number(state.pending.length > 0) - Number(peer.pending.length > 0)
    if (isDisposable(state, nowMs)) {
      this.#peers.delete(nodeId)
      this.#watched.delete(nodeId)
    } else {
      this.#peers.set(nodeId, state)
      if (state.session === undefined || state.rekey !== undefined) this.#watched.add(nodeId)
      else this.#watched.delete(nodeId)
    }
    this.#count(actions)
    return actions
  }

  #count(actions: ReadonlyArray<Action>): void {
    for (const action of actions) {
      switch (action._tag) {
        case "DropPacket":
          this.#counters.packetDrops[action.reason]++
          break
        case "DropPending":
          this.#counters.pendingDiscarded += action.count
          break
        case "RejectTableFull":
          this.#counters.tableFull[action.table]++
          break
      }
    }
  }
}

/**
 * Which path a peer's traffic takes — direct UDP or the beacon relay — as seen from the evidence the tunnel
 * gathers (reference §7 "When relay is used"). Pure: the tunnel shell reports sends and decrypts and asks
 * what to do; the relay flag itself lives in the key-exchange core, which this module's verdicts feed
 * (`DirectPathSilent`, `DirectPathRestored`).
 *
 * Rules:
 * - Silent path (the reference's blackhole heuristic): `SILENT_SENDS` or more packets sent directly since
 *   the last authenticated direct receive, the first of them more than `SILENT_AFTER_MS` ago → relay, and the
 *   peer's address is looked up again; without a beacon, the address is looked up again and our key exchange
 *   sent there (a peer that restarted on another port is otherwise lost: our session points at a dead
 *   endpoint and nothing from the new process can ever decrypt under it).
 * - Upgrade: `RESTORE_AFTER_DIRECT_DECRYPTS` authenticated (decrypted, replay-checked) packets received
 *   directly while relayed → direct again. Relay-delivered packets never count: the beacon could fake the
 *   path, not the AEAD.
 * - Probes: every `PROBE_INTERVAL_MS` a relayed peer with a known direct address gets a punch request and
 *   `PROBES_PER_ROUND` encrypted path probes sent directly; each probe's pong is a direct receive, so one
 *   working round restores the path.
 * - Pinned (the peer registered `relay_only`): always relayed, never probed or upgraded.
 *
 * Decisions where the reference is silent: the reference clears the relay flag after 3 *consecutive* direct
 * packets; relayed packets interleave with probes here, so they neither count nor reset the count. The
 * reference sends a relay copy of every first key exchange at once; that copy usually wins the race against
 * a direct frame still waiting for the NAT to be punched, which put every first contact on the relay. We
 * punch first and send the relay copy only if the direct attempt is still unanswered a second later
 * (`tunnel.ts`, `relayCopyAfter`); the key exchange's retransmit falls back to the relay as well.
 */

/** Direct sends without an answer before the path counts as silent. */
export const SILENT_SENDS = 3
/** …and the time the first of them has been waiting (the reference's 8 s). */
export const SILENT_AFTER_MS = 8_000
/** Authenticated direct receives that move a relayed peer back to the direct path. */
export const RESTORE_AFTER_DIRECT_DECRYPTS = 3
/** How often a relayed peer's direct path is probed (the reference's 15 s relay probe loop). */
export const PROBE_INTERVAL_MS = 15_000
/** Probes per round: one round's pongs are enough to restore the path. */
export const PROBES_PER_ROUND = RESTORE_AFTER_DIRECT_DECRYPTS

export interface PathState {
  /** Packets sent directly since the last authenticated direct receive. */
  readonly unansweredSends: number
  /** When the first of those was sent. */
  readonly firstUnansweredMs: number | undefined
  /** Authenticated direct receives since the peer went to the relay. */
  readonly directDecrypts: number
  readonly lastProbeMs: number | undefined
  /** The peer is relay-only (registry `relay_only`). */
  readonly pinned: boolean
}

export const FRESH_PATH: PathState = {
  unansweredSends: 0,
  firstUnansweredMs: undefined,
  directDecrypts: 0,
  lastProbeMs: undefined,
  pinned: false
}

/** A packet went out directly. */
export const directSent = (path: PathState, nowMs: number): PathState =>
  path.unansweredSends === 0
    ? { ...path, unansweredSends: 1, firstUnansweredMs: nowMs }
    : { ...path, unansweredSends: path.unansweredSends + 1 }

/**
 * An authenticated packet arrived directly. `restore`: the peer is relayed and has now proven the direct
 * path often enough to leave the relay.
 */
export const directDecrypted = (path: PathState, relayed: boolean): { readonly path: PathState; readonly restore: boolean } => {
  const answered: PathState = { ...path, unansweredSends: 0, firstUnansweredMs: undefined }
  if (!relayed || path.pinned) return { path: answered, restore: false }
  const directDecrypts = path.directDecrypts + 1
  return directDecrypts >= RESTORE_AFTER_DIRECT_DECRYPTS
    ? { path: { ...answered, directDecrypts: 0 }, restore: true }
    : { path: { ...answered, directDecrypts }, restore: false }
}

/** The relay flag changed: start counting afresh. */
export const relayChanged = (path: PathState): PathState => ({
  ...path,
  unansweredSends: 0,
  firstUnansweredMs: undefined,
  directDecrypts: 0
})

export type PathVerdict = "keep" | "go_relay" | "probe"

/**
 * What the tick should do for a peer: `go_relay` when its direct path went silent (or it is pinned and not
 * yet relayed), `probe` when it is relayed, probe-able and due. Only meaningful when a beacon is known.
 */
export const pathVerdict = (
  path: PathState,
  peer: { readonly relayed: boolean; readonly hasDirectAddress: boolean },
  nowMs: number
): PathVerdict => {
  if (!peer.relayed) {
    if (path.pinned) return "go_relay"
    const silent = path.unansweredSends >= SILENT_SENDS &&
      path.firstUnansweredMs !== undefined &&
      nowMs - path.firstUnansweredMs > SILENT_AFTER_MS
    return silent ? "go_relay" : "keep"
  }
  if (path.pinned || !peer.hasDirectAddress) return "keep"
  return path.lastProbeMs === undefined || nowMs - path.lastProbeMs >= PROBE_INTERVAL_MS ? "probe" : "keep"
}

export const probed = (path: PathState, nowMs: number): PathState => ({ ...path, lastProbeMs: nowMs })

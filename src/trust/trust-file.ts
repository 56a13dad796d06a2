/**
 * `trust.json` (reference §5), byte-compatible with the Go daemon's file:
 *
 *   {"trusted":[{node_id, public_key, approved_at, mutual, network?}],
 *    "pending":[{node_id, public_key?, justification?, received_at, source?}],
 *    "revoked":[{node_id, until}]}
 *
 * 2-space indented, times RFC 3339. Only live entries are written (unexpired revoke cooldowns and pending
 * requests; outgoing requests are never persisted). Entries are sorted by node ID so that equal states give equal
 * files.
 *
 * Loading is forgiving per entry and strict per file: a malformed entry (or a duplicate node ID) is skipped and
 * counted, expired entries are dropped silently, and a file that is not a JSON object is "unparseable" — the
 * caller starts empty, reports it, and must leave the file alone until the state really changes.
 */
import { Result, Schema } from "effect"
import { NodeId, PublicKeyB64 } from "../protocol/registry.ts"
import { type PendingRequest, pruneExpired, type TrustedPeer, type TrustState } from "./trust-state.ts"

export const TRUST_FILE_NAME = "trust.json"

const RFC3339 = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/i

/** Unix milliseconds of an RFC 3339 time (Go writes nanoseconds; sub-millisecond digits are dropped). */
export const parseRfc3339 = (text: string): number | undefined => {
  const match = RFC3339.exec(text)
  if (match === null) return undefined
  const fraction = (match[2] ?? "").slice(0, 3).padEnd(3, "0")
  const millis = Date.parse(`${match[1]}.${fraction}${match[3]}`)
  return Number.isNaN(millis) ? undefined : millis
}

const formatRfc3339 = (millis: number): string => new Date(millis).toISOString()

const Time = Schema.String
const TrustedEntry = Schema.Struct({
  node_id: NodeId,
  public_key: PublicKeyB64,
  approved_at: Time,
  mutual: Schema.Boolean,
  network: Schema.optionalKey(Schema.Number.check(Schema.isInt()))
})
const PendingEntry = Schema.Struct({
  node_id: NodeId,
  public_key: Schema.optionalKey(PublicKeyB64),
  justification: Schema.optionalKey(Schema.String),
  received_at: Time,
  source: Schema.optionalKey(NodeId)
})
const RevokedEntry = Schema.Struct({ node_id: NodeId, until: Time })

const byNodeId = <A extends { readonly node_id: number }>(entries: Iterable<A>): Array<A> =>
  [...entries].sort((a, b) => a.node_id - b.node_id)

/** The file's text for `state` at `now`. */
export const encodeTrustFile = (state: TrustState, now: number): string => {
  const live = pruneExpired(state, now)
  const file = {
    trusted: byNodeId(live.trusted.values()).map((peer) => ({
      node_id: peer.node_id,
      public_key: peer.public_key,
      approved_at: formatRfc3339(peer.approved_at),
      mutual: peer.mutual,
      ...(peer.network === undefined ? {} : { network: peer.network })
    })),
    pending: byNodeId(live.pending.values()).map((request) => ({
      node_id: request.node_id,
      ...(request.public_key === undefined ? {} : { public_key: request.public_key }),
      ...(request.justification === undefined ? {} : { justification: request.justification }),
      received_at: formatRfc3339(request.received_at),
      ...(request.source === undefined ? {} : { source: request.source })
    })),
    revoked: byNodeId([...live.cooldowns].map(([node_id, until]) => ({ node_id, until })))
      .map(({ node_id, until }) => ({ node_id, until: formatRfc3339(until) }))
  }
  return JSON.stringify(file, null, 2)
}

export interface LoadedTrust {
  readonly state: TrustState
  /** Malformed or duplicate entries that were left out. */
  readonly skipped: number
}

/**
 * Reads each element of `list` with `read` (which returns undefined for a malformed element) into a map by node
 * ID; a missing or null list is empty, anything else that is not an array counts as one skipped entry.
 */
const readList = <V>(
  list: unknown,
  read: (element: unknown) => readonly [number, V] | undefined
): { readonly entries: Map<number, V>; readonly skipped: number } => {
  const entries = new Map<number, V>()
  if (list === undefined || list === null) return { entries, skipped: 0 }
  if (!Array.isArray(list)) return { entries, skipped: 1 }
  let skipped = 0
  for (const element of list) {
    const entry = read(element)
    if (entry === undefined || entries.has(entry[0])) skipped++
    else entries.set(entry[0], entry[1])
  }
  return { entries, skipped }
}

const decodeEntry = <S extends Schema.Top & { readonly DecodingServices: never }>(schema: S) => {
  const decode = Schema.decodeUnknownResult(schema)
  return (element: unknown): S["Type"] | undefined => Result.getOrUndefined(decode(element))
}
const decodeTrusted = decodeEntry(TrustedEntry)
const decodePending = decodeEntry(PendingEntry)
const decodeRevoked = decodeEntry(RevokedEntry)

const readTrusted = (element: unknown): readonly [number, TrustedPeer] | undefined => {
  const entry = decodeTrusted(element)
  const approvedAt = entry === undefined ? undefined : parseRfc3339(entry.approved_at)
  if (entry === undefined || approvedAt === undefined) return undefined
  return [entry.node_id, { ...entry, approved_at: approvedAt }]
}

const readPending = (element: unknown): readonly [number, PendingRequest] | undefined => {
  const entry = decodePending(element)
  const receivedAt = entry === undefined ? undefined : parseRfc3339(entry.received_at)
  if (entry === undefined || receivedAt === undefined) return undefined
  return [entry.node_id, { ...entry, received_at: receivedAt }]
}

const readRevoked = (element: unknown): readonly [number, number] | undefined => {
  const entry = decodeRevoked(element)
  const until = entry === undefined ? undefined : parseRfc3339(entry.until)
  return entry === undefined || until === undefined ? undefined : [entry.node_id, until]
}

/** Parses the file's text; fails (with why) only when the text as a whole is not a JSON object. */
export const decodeTrustFile = (text: string, now: number): Result.Result<LoadedTrust, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    return Result.fail(error instanceof Error ? error.message : String(error))
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) return Result.fail("not a JSON object")
  const fields = json as Record<string, unknown>
  const trusted = readList(fields["trusted"], readTrusted)
  const pending = readList(fields["pending"], readPending)
  const revoked = readList(fields["revoked"], readRevoked)
  const state = pruneExpired({
    trusted: trusted.entries,
    pending: pending.entries,
    outgoing: new Map(),
    cooldowns: revoked.entries
  }, now)
  return Result.succeed({ state, skipped: trusted.skipped + pending.skipped + revoked.skipped })
}

/**
 * The trust store: the daemon's one owner of the trust state, persisted to `<directory>/trust.json`.
 *
 * Every mutation is synchronous on the in-memory state (single-threaded, so no lock exists to be held across the
 * disk) and only marks the coalescing saver dirty; the saver fiber snapshots and writes with `writeFileAtomic`
 * (mode 0600), retrying and logging failed writes (DESIGN.md §4 rule 7, reference §5 "PR (c)"). When the scope
 * closes, the saver writes whatever is unsaved, bounded by `finalSaveTimeout` — never an untouched file, so an
 * unparseable `trust.json` survives until the trust state really changes.
 *
 * The store decides and remembers; it does not talk to peers or the registry. Each operation returns the
 * effects (accept/reject/revoke messages, registry reports, tunnel teardown, events) for the caller to perform.
 */
import { Clock, Effect, FileSystem, Path, Result } from "effect"
import type { Duration, Scope } from "effect"
import type { PlatformError } from "effect/PlatformError"
import { writeFileAtomic } from "../lifecycle/atomic-file.ts"
import { type CoalescingSaver, makeCoalescingSaver, type SaverStats } from "../lifecycle/coalescing-saver.ts"
import { decodeTrustFile, encodeTrustFile, TRUST_FILE_NAME } from "./trust-file.ts"
import {
  approve,
  emptyTrustState,
  type IncomingRequest,
  pruneExpired,
  receiveAccept,
  receiveReject,
  receiveRequest,
  receiveRevoke,
  recordOutgoing,
  reject,
  revoke,
  type Transition,
  type TrustEffect,
  type TrustPolicy,
  type TrustRefusal,
  type TrustState
} from "./trust-state.ts"

export interface TrustStoreOptions {
  /** The identity file's directory; the store owns `<directory>/trust.json`. */
  readonly directory: string
  readonly policy: TrustPolicy
  /** Let a burst of trust changes settle before a save. Default: save at once. */
  readonly saveDebounce?: Duration.Input
  /** Bound on the final save at shutdown. Default 2 s (the Go daemon's stop bound). */
  readonly finalSaveTimeout?: Duration.Input
}

/** What loading found: `unparseable` means the file was kept as is and the store started empty. */
export type TrustLoadOutcome =
  | { readonly _tag: "Missing" }
  | { readonly _tag: "Loaded"; readonly skipped: number }
  | { readonly _tag: "Unparseable"; readonly reason: string }

export interface TrustStore {
  readonly path: string
  readonly loaded: TrustLoadOutcome
  /** The live state now (expired entries dropped). */
  readonly state: Effect.Effect<TrustState>
  readonly receiveRequest: (request: IncomingRequest) => Effect.Effect<ReadonlyArray<TrustEffect>>
  readonly recordOutgoing: (peer: number) => Effect.Effect<ReadonlyArray<TrustEffect>>
  readonly approve: (peer: number, publicKey?: string) => Effect.Effect<ReadonlyArray<TrustEffect>, TrustRefusal>
  readonly reject: (peer: number) => Effect.Effect<ReadonlyArray<TrustEffect>, TrustRefusal>
  readonly revoke: (peer: number) => Effect.Effect<ReadonlyArray<TrustEffect>, TrustRefusal>
  readonly receiveAccept: (peer: number, publicKey: string) => Effect.Effect<ReadonlyArray<TrustEffect>>
  readonly receiveReject: (peer: number) => Effect.Effect<ReadonlyArray<TrustEffect>>
  readonly receiveRevoke: (peer: number) => Effect.Effect<ReadonlyArray<TrustEffect>>
  /** Waits until everything is on disk (retrying failed writes): bound it where the disk may be failing. */
  readonly flush: Effect.Effect<void>
  readonly saverStats: Effect.Effect<SaverStats>
}

const load = Effect.fnUntraced(function*(file: string) {
  const fs = yield* FileSystem.FileSystem
  const now = yield* Clock.currentTimeMillis
  const text = yield* fs.readFileString(file).pipe(
    Effect.catchIf((error) => error.reason._tag === "NotFound", () => Effect.succeed(undefined))
  )
  if (text === undefined) return { state: emptyTrustState, outcome: { _tag: "Missing" } as const }
  const decoded = decodeTrustFile(text, now)
  if (Result.isFailure(decoded)) {
    yield* Effect.logError("trust.json is unparseable: starting with no trust; the file is kept until trust changes", {
      file,
      reason: decoded.failure
    })
    return { state: emptyTrustState, outcome: { _tag: "Unparseable", reason: decoded.failure } as const }
  }
  if (decoded.success.skipped > 0) {
    yield* Effect.logWarning("trust.json: skipped malformed entries", { file, skipped: decoded.success.skipped })
  }
  return { state: decoded.success.state, outcome: { _tag: "Loaded", skipped: decoded.success.skipped } as const }
})

export const makeTrustStore = Effect.fnUntraced(function*(
  options: TrustStoreOptions
): Effect.fn.Return<TrustStore, PlatformError, FileSystem.FileSystem | Path.Path | Scope.Scope> {
  const path = yield* Path.Path
  const file = path.join(options.directory, TRUST_FILE_NAME)
  const loaded = yield* load(file)
  let state = loaded.state

  const saver: CoalescingSaver = yield* makeCoalescingSaver({
    name: "trust store",
    snapshot: Effect.map(Clock.currentTimeMillis, (now) => encodeTrustFile(state, now)),
    write: (data) => writeFileAtomic(file, data, { mode: 0o600 }),
    ...(options.saveDebounce === undefined ? {} : { debounce: options.saveDebounce }),
    finalSaveTimeout: options.finalSaveTimeout ?? "2 seconds"
  })

  const commit = (transition: Transition): ReadonlyArray<TrustEffect> => {
    state = transition.state
    if (transition.changed) saver.markDirty()
    return transition.effects
  }
  const run = (step: (state: TrustState, now: number) => Transition) =>
    Effect.map(Clock.currentTimeMillis, (now) => commit(step(state, now)))
  const attempt = (step: (state: TrustState, now: number) => Result.Result<Transition, TrustRefusal>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.map(Effect.fromResult(step(state, now)), commit))

  const store: TrustStore = {
    path: file,
    loaded: loaded.outcome,
    state: Effect.map(Clock.currentTimeMillis, (now) => pruneExpired(state, now)),
    receiveRequest: (request) => run((s, now) => receiveRequest(s, request, options.policy, now)),
    recordOutgoing: (peer) => run((s, now) => recordOutgoing(s, peer, now)),
    approve: (peer, publicKey) => attempt((s, now) => approve(s, peer, now, publicKey)),
    reject: (peer) => attempt((s, now) => reject(s, peer, now)),
    revoke: (peer) => attempt((s, now) => revoke(s, peer, now)),
    receiveAccept: (peer, publicKey) => run((s, now) => receiveAccept(s, peer, publicKey, now)),
    receiveReject: (peer) => run((s, now) => receiveReject(s, peer, now)),
    receiveRevoke: (peer) => run((s, now) => receiveRevoke(s, peer, now)),
    flush: saver.flush,
    saverStats: saver.stats
  }
  return store
})

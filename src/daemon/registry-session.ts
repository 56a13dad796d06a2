/**
 * The daemon's registry session (reference §6, DESIGN.md §4 rules 2-5): registers this node and keeps its lease
 * alive from one background publisher fiber, and retracts the entry when the daemon stops.
 *
 * Contract:
 * - Built in the caller's scope; it returns at once. Registration runs in the background, so the daemon binds its
 *   socket and serves IPC before (and whether or not) the registry answers: "accepting" and "registered" are
 *   separate states, and `state` is the live view of the second one for `health`.
 * - The publisher registers (signed), then heartbeats every `heartbeatInterval` (signed). A heartbeat refused with
 *   `node_not_found` or `invalid_signature` re-registers at once; `missedHeartbeats` consecutive failed heartbeats
 *   (default 3) re-register too. Registration failures are never fatal: they retry forever with capped exponential
 *   backoff and jitter, one Warning per failed attempt.
 * - Every call is bounded by the client's deadline (`registry.callTimeout`, default 8 s), so a half-open
 *   connection costs one deadline, never a wedged session.
 * - Closing the scope interrupts and joins the publisher, then sends a signed `deregister` bounded by
 *   `deregisterTimeout` (default 5 s), logging the outcome. (Newer Go daemons leave the entry to the 3-minute TTL;
 *   the pilot-daemon issue requires the retract.)
 *
 * Why nothing can re-create the entry after the retract (dmsg.md §8 items 5 and 6): the registry applies a request
 * it has read even when the client hangs up, so interrupting a `register` on the wire does not cancel it — its late
 * arrival could follow the `deregister` and leave a zombie. A `register` therefore runs uninterruptibly (its
 * deadline still cuts it), and the join at shutdown waits for its reply, i.e. until the registry has applied it. A
 * heartbeat stays interruptible: a late heartbeat cannot revive a lease the registry no longer holds. Interruption
 * is only honoured between calls, so no call starts once shutdown has begun.
 *
 * Residual risk, stated: a `register` the registry applies after the client's deadline has expired may still land
 * after the retract (the registry would have to stall for the whole deadline); the lease TTL reaps it.
 *
 * Where the spec is silent: the node ID to retract is the last one any `register_ok` carried, even while the
 * session is between registrations, since a re-registration in doubt may have landed. `nodeId` resolves with the
 * first ID; a later registration under another ID (a registry that lost its state) is logged at Warning and shown
 * in `state`.
 */
import { Clock, Deferred, Duration, Effect, Fiber, Option, Queue, Random, Result } from "effect"
import type { Identity } from "../crypto/identity.ts"
import { addBoundedFinalizer } from "../lifecycle/bounded.ts"
import { type EssentialFiberFailed, supervise } from "../lifecycle/supervisor.ts"
import type { DecodeError } from "../protocol/errors.ts"
import {
  decodeRegistryReply,
  deregisterChallenge,
  heartbeatChallenge,
  type RegistryErrorCode,
  registerChallenge
} from "../protocol/registry.ts"
import {
  makeRegistryClient,
  type RegistryClient,
  type RegistryClientOptions,
  RegistryRejected,
  RegistryUnavailable
} from "../registry/client.ts"
import { backoffDelayMillis, type BackoffPolicy } from "../lifecycle/backoff.ts"

export interface RegistrySessionOptions {
  readonly registry: RegistryClientOptions
  readonly identity: Identity
  /** The endpoint peers should dial (`host:port`, or `:port` for the registry to fill in the host it sees). */
  readonly listenAddr: string
  readonly hostname?: string
  readonly version?: string
  /** Register as reachable through the beacon relay only (`relay_only`): peers never try a direct path. */
  readonly relayOnly?: boolean
  /** Default 60 s (reference §6, newer daemons). */
  readonly heartbeatInterval?: Duration.Input
  /** Consecutive failed heartbeats that make the session register again. Default 3. */
  readonly missedHeartbeats?: number
  /** Registration retry delays. Default: from 500 ms (the reference client's reconnect base), capped at 60 s. */
  readonly backoff?: { readonly base?: Duration.Input; readonly cap?: Duration.Input }
  /** Bound on the `deregister` at shutdown. Default 5 s. */
  readonly deregisterTimeout?: Duration.Input
}

export interface Registration {
  readonly nodeId: number
  /** The virtual address the registry assigned, e.g. `0:0000.0000.002A`. */
  readonly address: string
}

export interface RegistrySessionState {
  /** The registration the registry last confirmed; `undefined` while (re-)registering. */
  readonly registered: Registration | undefined
  /** When a registry call last succeeded (epoch ms). */
  readonly lastOkMillis: number | undefined
  /** Registry calls failed in a row since the last success. */
  readonly consecutiveFailures: number
  /** The most recent failure, for `health`. */
  readonly lastError: string | undefined
}

export interface RegistrySession {
  /** A snapshot of the session, current as of the call. */
  readonly state: Effect.Effect<RegistrySessionState>
  /** Waits for the first successful registration and returns its node ID. */
  readonly nodeId: Effect.Effect<number>
  /** Fails if the publisher ever ends (a defect: it retries every failure); never succeeds. */
  readonly failure: Effect.Effect<never, EssentialFiberFailed>
  /** Registers again now instead of at the next heartbeat (the receive watchdog's soft recovery). */
  readonly reregister: Effect.Effect<void>
  /**
   * The hostname every later registration carries (`pilotctl set-hostname` changed it at the registry; a
   * re-registration with the old one would silently undo that). `undefined`: none.
   */
  readonly setHostname: (hostname: string | undefined) => void
}

type CallError = RegistryUnavailable | RegistryRejected | DecodeError

/** Refusals of a heartbeat that mean the registry does not know this node (any more): register again at once. */
const REREGISTER_AT_ONCE: ReadonlySet<string> = new Set(["node_not_found", "invalid_signature"] satisfies Array<RegistryErrorCode>)

export const makeRegistrySession = Effect.fnUntraced(function*(options: RegistrySessionOptions) {
  const { identity } = options
  const heartbeatInterval = options.heartbeatInterval ?? "60 seconds"
  const missedHeartbeats = options.missedHeartbeats ?? 3
  const policy: BackoffPolicy = {
    baseMillis: Duration.toMillis(Duration.fromInputUnsafe(options.backoff?.base ?? "500 millis")),
    capMillis: Duration.toMillis(Duration.fromInputUnsafe(options.backoff?.cap ?? "60 seconds"))
  }
  const client: RegistryClient = yield* makeRegistryClient(options.registry)

  let registered: Registration | undefined
  let lastOkMillis: number | undefined
  let consecutiveFailures = 0
  let lastError: string | undefined
  // The ID to retract at shutdown: the last one the registry assigned, kept while re-registering.
  let retractId: number | undefined
  const firstNodeId = yield* Deferred.make<number>()
  let hostname = options.hostname
  const reregisterNow = yield* Queue.dropping<void>(1)

  const succeeded = Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Effect.sync(() => {
      lastOkMillis = now
      consecutiveFailures = 0
      lastError = undefined
    }))
  const failed = (error: CallError) =>
    Effect.sync(() => {
      consecutiveFailures++
      lastError = error.message
    })

  const register = Effect.gen(function*() {
    const reply = yield* client.call({
      type: "register",
      listen_addr: options.listenAddr,
      public_key: identity.publicKeyBase64,
      ...(hostname === undefined ? {} : { hostname }),
      ...(options.version === undefined ? {} : { version: options.version }),
      ...(options.relayOnly === true ? { relay_only: true } : {}),
      signature: identity.signChallenge(registerChallenge(options.listenAddr, identity.publicKeyBase64))
    })
    const decoded = yield* Effect.fromResult(decodeRegistryReply(reply))
    if (decoded.type !== "register_ok") {
      return yield* new RegistryUnavailable({
        address: `${options.registry.host}:${options.registry.port}`,
        reason: "protocol",
        detail: `expected register_ok, got ${decoded.type}`
      })
    }
    // Recorded inside the uninterruptible call: a registration the registry applied is always known to shutdown.
    if (retractId !== undefined && retractId !== decoded.node_id) {
      yield* Effect.logWarning(`registry assigned node ${decoded.node_id}, previously ${retractId}: it lost its state`)
    }
    retractId = decoded.node_id
    registered = { nodeId: decoded.node_id, address: decoded.address }
    yield* Deferred.succeed(firstNodeId, decoded.node_id)
    yield* succeeded
    if (decoded.hostname_error !== undefined) yield* Effect.logWarning(`hostname not set: ${decoded.hostname_error}`)
    yield* Effect.logInfo(`registered as node ${decoded.node_id} (${decoded.address})`)
    return decoded.node_id
  }).pipe(Effect.tapError(failed), Effect.uninterruptible)

  const registerUntilDone = Effect.gen(function*() {
    for (let attempt = 1;; attempt++) {
      const outcome = yield* Effect.result(register)
      if (Result.isSuccess(outcome)) return outcome.success
      const delay = backoffDelayMillis(attempt, policy, yield* Random.next)
      yield* Effect.logWarning(`registration attempt ${attempt} failed; retrying in ${delay} ms`, outcome.failure)
      yield* Effect.sleep(delay)
    }
  })

  const heartbeat = (nodeId: number) =>
    client.call({ type: "heartbeat", node_id: nodeId, signature: identity.signChallenge(heartbeatChallenge(nodeId)) }).pipe(
      Effect.andThen(succeeded),
      Effect.tapError(failed)
    )

  /** Heartbeats until the lease is lost or in doubt. */
  const heartbeatWhileRegistered = (nodeId: number) =>
    Effect.gen(function*() {
      let missed = 0
      while (true) {
        const woken = yield* Queue.take(reregisterNow).pipe(Effect.timeoutOption(heartbeatInterval))
        if (Option.isSome(woken)) {
          yield* Effect.logInfo("registering again on request")
          return
        }
        const outcome = yield* Effect.result(heartbeat(nodeId))
        if (Result.isSuccess(outcome)) {
          missed = 0
          continue
        }
        const error = outcome.failure
        if (error._tag === "RegistryRejected" && REREGISTER_AT_ONCE.has(error.code)) {
          yield* Effect.logWarning(`heartbeat refused (${error.code}); registering again`)
          return
        }
        missed++
        yield* Effect.logWarning(`heartbeat failed (${missed} of ${missedHeartbeats} in a row)`, error)
        if (missed >= missedHeartbeats) return
      }
    })

  const publish = Effect.gen(function*() {
    while (true) {
      const nodeId = yield* registerUntilDone
      yield* heartbeatWhileRegistered(nodeId)
      registered = undefined
    }
  })

  const deregister = Effect.suspend(() => {
    const nodeId = retractId
    if (nodeId === undefined) return Effect.logDebug("never registered: nothing to retract")
    return client.call({ type: "deregister", node_id: nodeId, signature: identity.signChallenge(deregisterChallenge(nodeId)) }).pipe(
      Effect.andThen(Effect.logInfo(`deregistered node ${nodeId}`)),
      Effect.andThen(Effect.sync(() => {
        registered = undefined
      }))
    )
  })

  const log = Effect.annotateLogs({ registry: `${options.registry.host}:${options.registry.port}` })
  // Finalizers run last-in first-out: this one is added before the publisher is forked, so it runs after the
  // publisher has been interrupted and joined — and the client, built first, closes after both.
  yield* addBoundedFinalizer("deregister from the registry", options.deregisterTimeout ?? "5 seconds", log(deregister))
  const publisher = yield* Effect.forkScoped(supervise({ "registry-session": log(publish) }))

  const session: RegistrySession = {
    state: Effect.sync(() => ({ registered, lastOkMillis, consecutiveFailures, lastError })),
    nodeId: Deferred.await(firstNodeId),
    failure: Fiber.join(publisher),
    reregister: Effect.sync(() => void Queue.offerUnsafe(reregisterNow, undefined)),
    setHostname: (name) => {
      hostname = name
    }
  }
  return session
})

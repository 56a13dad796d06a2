/**
 * The trust handshake service (reference §5): serves port 444, sends handshakes, polls the registry for relayed
 * ones, and performs what the trust store's transitions decide.
 *
 * Inbound, one JSON message per overlay stream: read until the message is complete, the peer closes or 64 KiB
 * (10 s deadline), then authenticated in this order — fresh timestamp; a signature (always required: without it
 * nothing binds the message to `node_id`); accept/reject/revoke only from a stream whose authenticated overlay
 * source is `node_id`; the claimed key equal (constant time) to the registry's key for `node_id`; the signature
 * over `handshake:<node_id>:<me>` valid under the registry's key; and only then the replay set, so forgeries
 * cannot fill it. A message failing any check is counted by reason and changes nothing. Every stream is closed
 * 500 ms after its message was processed, whatever the outcome (§14.9: unclosed streams leaked).
 *
 * Effects of a transition are performed in order, each contained and bounded (a failed send or registry call
 * is logged, never fatal). Events are published, and `waitForTrust` waiters woken, after the transition's I/O:
 * a "granted" event then means the accept went out and the registry knows the pair, so an observer can resolve
 * the peer at once. Accepts and rejects answer the way the request came: a relayed request is answered with a
 * signed `respond_handshake`; a direct one on the peer's port 444, falling back to the registry if the peer
 * cannot be reached. A revoke is only sent directly (nothing relays it).
 *
 * The relayed-handshake poller is one fiber in the caller's scope (schedule in `relay-poll-schedule.ts`); polls
 * never overlap because only that fiber polls. At shutdown it is asked to stop and joined, waiting for an
 * in-flight poll up to `pollStopTimeout` — a poll's answer has already emptied the registry inbox, so it is
 * better finished than cut — and interrupted after that.
 *
 * Where the reference is silent:
 * - The replay digest covers (type, challenge, signature) as in the reference; Ed25519 signatures are
 *   deterministic and the challenge is not message-specific, so a peer's second request of the same type within
 *   the 10-minute replay TTL is dropped as a replay (the Go daemon behaves the same).
 * - A relayed request's key is backfilled from the registry, which authenticated the request with it; if the
 *   registry has no key the request is pending without one and not registry-bound.
 * - A tunnel teardown is delegated to the `tearDownTunnel` hook (the daemon wires it to the tunnel).
 */
import { Clock, Deferred, type Duration, Effect, Fiber, FiberSet, Queue, Result, Schema, type Scope } from "effect"
import { timingSafeEqual } from "node:crypto"
import { decodeBase64, encodeBase64 } from "../crypto/base64.ts"
import type { Identity } from "../crypto/identity.ts"
import { verifyChallenge } from "../crypto/signing.ts"
import { addBoundedFinalizer } from "../lifecycle/bounded.ts"
import { WellKnownPort } from "../protocol/packet.ts"
import {
  decodeRegistryReply,
  pollHandshakesChallenge,
  reportTrustChallenge,
  respondHandshakeChallenge,
  revokeTrustChallenge
} from "../protocol/registry.ts"
import {
  checkTrustTimestamp,
  decodeTrustMessage,
  encodeTrustMessage,
  MAX_TRUST_MESSAGE_BYTES,
  type TrustMessage,
  type TrustMessageType,
  trustHandshakeChallenge
} from "../protocol/trust-message.ts"
import type { RegistryClient } from "../registry/client.ts"
import type { Connection, Transport } from "../transport/transport.ts"
import {
  armFastPolling,
  DEFAULT_POLL_TIMING,
  makePollSchedule,
  nextPollAt,
  type PollTiming,
  recordPoll
} from "./relay-poll-schedule.ts"
import { checkAndRecord, makeReplaySet, reap, replayDigest } from "./trust-replay.ts"
import { isTrusted, sanitizeJustification, type TrustEffect, type TrustEvent, type TrustRefusal } from "./trust-state.ts"
import type { TrustStore } from "./trust-store.ts"
import { concatBytes } from "../protocol/length-prefixed.ts"

export class HandshakeError extends Schema.TaggedError<HandshakeError>()("HandshakeError", {
  reason: Schema.Literals(["no_pending_request", "no_public_key", "not_trusted", "in_flight", "unreachable"]),
  detail: Schema.String
}) {
  get code(): string {
    return this.reason
  }
  override get message(): string {
    return this.detail
  }
}

/** Why an inbound message was refused (the key of `HandshakeStats.rejected`). */
export type RejectionReason =
  | "timeout"
  | "malformed"
  | "stale"
  | "from_self"
  | "no_public_key"
  | "no_signature"
  | "source_mismatch"
  | "unknown_node"
  | "registry_unavailable"
  | "key_mismatch"
  | "bad_signature"
  | "replay"

export interface HandshakeTiming {
  /** Deadline for a peer's message to arrive. Default 10 s. */
  readonly receiveTimeout: Duration.Input
  /** Delay between processing a message and closing its stream. Default 500 ms. */
  readonly closeDelay: Duration.Input
  /** Bound on delivering one message to a peer's port 444 (dial + write). Default 10 s. */
  readonly sendTimeout: Duration.Input
  /** How long an on-demand poll's caller waits for the poll. Default 3 s. */
  readonly onDemandWait: Duration.Input
  /** Bound on waiting for an in-flight poll at shutdown. Default 10 s (above the registry call deadline). */
  readonly pollStopTimeout: Duration.Input
  readonly poll: PollTiming
}

export interface HandshakeServiceOptions<E> {
  readonly identity: Identity
  readonly nodeId: number
  readonly transport: Transport
  readonly store: TrustStore
  readonly registry: RegistryClient
  /** The Ed25519 key the registry holds for a node (as the tunnel's). */
  readonly registryKey: (nodeId: number) => Effect.Effect<Uint8Array | undefined, E>
  readonly onEvent?: (event: TrustEvent) => Effect.Effect<void>
  readonly tearDownTunnel?: (peer: number) => Effect.Effect<void>
  readonly timing?: Partial<Omit<HandshakeTiming, "poll">> & { readonly poll?: Partial<PollTiming> }
}

export interface HandshakeStats {
  readonly received: number
  readonly authenticated: number
  readonly rejected: Readonly<Partial<Record<RejectionReason, number>>>
  readonly sentDirect: number
  readonly sentRelayed: number
  readonly sendFailures: number
  readonly polls: number
  readonly pollFailures: number
  readonly relayedRequests: number
  readonly relayedResponses: number
}

export interface HandshakeService {
  /** Sends a signed request to `peer`: directly on its port 444, else relayed through the registry. */
  readonly handshake: (peer: number, justification: string) => Effect.Effect<"direct" | "relayed", HandshakeError>
  readonly approve: (peer: number) => Effect.Effect<void, HandshakeError>
  readonly reject: (peer: number) => Effect.Effect<void, HandshakeError>
  readonly revoke: (peer: number) => Effect.Effect<void, HandshakeError>
  /** Whether `peer` is trusted within `timeout` (true at once if it already is). */
  readonly waitForTrust: (peer: number, timeout: Duration.Input) => Effect.Effect<boolean>
  /** Asks for a relayed-handshake poll (at most one per 2 s) and waits for it, up to `onDemandWait`. */
  readonly pollNow: Effect.Effect<void>
  readonly stats: () => HandshakeStats
}

/** Relayed requests remembered so their answer goes back through the registry (bounded like the pending queue). */
const MAX_RELAYED_PEERS = 256

const sameKey = (a: Uint8Array, b: Uint8Array) => a.byteLength === b.byteLength && timingSafeEqual(a, b)

/** Whether the bytes so far may be a whole JSON object (cheap: a message ends with `}`). */
const mayBeComplete = (bytes: Uint8Array) => {
  for (let i = bytes.byteLength - 1; i >= 0; i--) {
    const byte = bytes[i]!
    if (byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09) continue
    return byte === 0x7d
  }
  return false
}


/** Reads one message: until it parses, the peer closes, or it exceeds the limit (then the decoder refuses it). */
const readMessage = (connection: Connection) =>
  Effect.gen(function*() {
    const chunks: Array<Uint8Array> = []
    let total = 0
    while (total <= MAX_TRUST_MESSAGE_BYTES) {
      const chunk = yield* connection.read
      if (chunk === undefined) break
      chunks.push(chunk)
      total += chunk.byteLength
      if (mayBeComplete(chunk) && Result.isSuccess(decodeTrustMessage(concatBytes(chunks, total)))) break
    }
    return concatBytes(chunks, total)
  })

type Verdict =
  | { readonly _tag: "Authenticated"; readonly message: TrustMessage; readonly key: Uint8Array }
  | { readonly _tag: "Rejected"; readonly reason: RejectionReason }

const rejected = (reason: RejectionReason): Verdict => ({ _tag: "Rejected", reason })

export const makeHandshakeService = Effect.fnUntraced(function*<E>(
  options: HandshakeServiceOptions<E>
): Effect.fn.Return<HandshakeService, never, Scope.Scope> {
  const { identity, nodeId: me, store, registry, transport } = options
  const timing = {
    receiveTimeout: options.timing?.receiveTimeout ?? "10 seconds",
    closeDelay: options.timing?.closeDelay ?? "500 millis",
    sendTimeout: options.timing?.sendTimeout ?? "10 seconds",
    onDemandWait: options.timing?.onDemandWait ?? "3 seconds",
    pollStopTimeout: options.timing?.pollStopTimeout ?? "10 seconds",
    poll: { ...DEFAULT_POLL_TIMING, ...options.timing?.poll }
  }
  const publishEvent = options.onEvent ?? ((event: TrustEvent) => Effect.logDebug("trust event", event))
  const tearDownTunnel = options.tearDownTunnel ??
    ((peer: number) => Effect.logDebug("no tunnel teardown wired", { peer }))

  const replay = makeReplaySet()
  let lastReap = 0
  const relayed = new Set<number>()
  const inFlight = new Set<number>()
  const waiters = new Map<number, Set<Deferred.Deferred<void>>>()
  const counters = {
    received: 0,
    authenticated: 0,
    sentDirect: 0,
    sentRelayed: 0,
    sendFailures: 0,
    polls: 0,
    pollFailures: 0,
    relayedRequests: 0,
    relayedResponses: 0
  }
  const rejections: Partial<Record<RejectionReason, number>> = {}

  const lookupKey = (peer: number) =>
    Effect.result(options.registryKey(peer)).pipe(
      Effect.map((result) => (Result.isSuccess(result) ? { key: result.success } : { failed: true as const }))
    )

  const unreachable = (peer: number, detail: string) =>
    new HandshakeError({ reason: "unreachable", detail: `node ${peer}: ${detail}` })

  /** A registry call signed over `challenge`; a reply of another type is a failure. */
  const signedCall = (request: Record<string, unknown>, challenge: string, expected: string) =>
    registry.call({ ...request, signature: identity.signChallenge(challenge) }).pipe(
      Effect.flatMap((reply) =>
        reply["type"] === expected
          ? Effect.succeed(reply)
          : Effect.fail(new HandshakeError({ reason: "unreachable", detail: `registry answered ${String(reply["type"])}` }))
      )
    )

  const messageTo = (peer: number, type: TrustMessageType, justification: string, now: number): TrustMessage => ({
    type,
    node_id: me,
    public_key: identity.publicKeyBase64,
    justification,
    signature: identity.signChallenge(trustHandshakeChallenge(me, peer)),
    reason: "",
    timestamp: Math.floor(now / 1000)
  })

  /** Delivers one message to `peer`'s port 444, bounded by `sendTimeout`. */
  const sendDirect = (peer: number, type: TrustMessageType, justification: string) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const encoded = encodeTrustMessage(messageTo(peer, type, justification, now))
      if (Result.isFailure(encoded)) return yield* Effect.die(encoded.failure)
      // Not acquireUseRelease: its acquire is uninterruptible, and the deadline must be able to cut the dial.
      yield* Effect.uninterruptibleMask((restore) =>
        restore(transport.dial({ network: 0, node: peer }, WellKnownPort.TrustHandshake)).pipe(
          Effect.flatMap((connection) =>
            restore(connection.write(encoded.success)).pipe(
              Effect.onExit((exit) => (exit._tag === "Success" ? connection.close : connection.abort))
            )
          )
        )
      )
      counters.sentDirect++
    }).pipe(
      Effect.timeoutOrElse({
        duration: timing.sendTimeout,
        orElse: () => Effect.fail(unreachable(peer, `no delivery within ${String(timing.sendTimeout)}`))
      }),
      Effect.mapError((error) => (error._tag === "HandshakeError" ? error : unreachable(peer, error.message)))
    )

  const respondRelayed = (peer: number, accept: boolean) =>
    signedCall(
      { type: "respond_handshake", node_id: me, peer_id: peer, accept },
      respondHandshakeChallenge(me, peer),
      "respond_handshake_ok"
    ).pipe(
      Effect.tap(() => Effect.sync(() => counters.sentRelayed++)),
      Effect.mapError((error) => unreachable(peer, error.message))
    )

  /** An accept or reject goes back the way the request came. */
  const answer = (peer: number, accept: boolean) => {
    const viaRegistry = respondRelayed(peer, accept).pipe(Effect.tap(() => Effect.sync(() => relayed.delete(peer))))
    if (relayed.has(peer)) return viaRegistry
    return sendDirect(peer, accept ? "handshake_accept" : "handshake_reject", "").pipe(
      Effect.catch(() => viaRegistry)
    )
  }

  const registryTrust = (type: "report_trust" | "revoke_trust", peer: number) =>
    signedCall(
      { type, node_id: me, peer_id: peer },
      type === "report_trust" ? reportTrustChallenge(me, peer) : revokeTrustChallenge(me, peer),
      `${type}_ok`
    )

  const wakeWaiters = (peer: number) => {
    const set = waiters.get(peer)
    if (set === undefined) return
    waiters.delete(peer)
    for (const waiter of set) Deferred.doneUnsafe(waiter, Effect.void)
  }

  const contained = (what: string, peer: number, effect: Effect.Effect<unknown, { readonly message: string }>) =>
    effect.pipe(
      Effect.catch((error) =>
        Effect.sync(() => counters.sendFailures++).pipe(
          Effect.andThen(Effect.logWarning(`trust: ${what} failed`, { peer, error: error.message }))
        )
      ),
      Effect.asVoid
    )

  /** Performs a transition's effects in order; events (and waiters) come after the I/O (see the module doc). */
  const perform = (effects: ReadonlyArray<TrustEffect>) =>
    Effect.gen(function*() {
      const events: Array<TrustEvent> = []
      for (const effect of effects) {
        switch (effect._tag) {
          case "Publish":
            events.push(effect.event)
            break
          case "SendAccept":
            yield* contained("sending accept", effect.peer, answer(effect.peer, true))
            break
          case "SendReject":
            yield* contained("sending reject", effect.peer, answer(effect.peer, false))
            break
          case "SendRevoke":
            yield* contained("sending revoke", effect.peer, sendDirect(effect.peer, "handshake_revoke", ""))
            break
          case "TearDownTunnel":
            yield* tearDownTunnel(effect.peer)
            break
          case "ReportTrust":
            yield* contained("report_trust", effect.peer, registryTrust("report_trust", effect.peer))
            break
          case "RevokeTrust":
            yield* contained("revoke_trust", effect.peer, registryTrust("revoke_trust", effect.peer))
            break
        }
      }
      for (const event of events) {
        yield* publishEvent(event)
        if (event.name === "trust.changed" && event.state === "granted") wakeWaiters(event.peer)
      }
    })

  // ---------------------------------------------------------------------------------------------------------
  // Inbound: port 444
  // ---------------------------------------------------------------------------------------------------------

  const authenticate = (message: TrustMessage, source: number, now: number) =>
    Effect.gen(function*(): Effect.fn.Return<Verdict> {
      if (checkTrustTimestamp(message.timestamp, now) !== "fresh") return rejected("stale")
      if (message.node_id === me) return rejected("from_self")
      if (message.type === "handshake_request" && message.public_key === "") return rejected("no_public_key")
      if (message.signature === "") return rejected("no_signature")
      if (message.type !== "handshake_request" && source !== message.node_id) return rejected("source_mismatch")
      const lookup = yield* lookupKey(message.node_id)
      if ("failed" in lookup) return rejected("registry_unavailable")
      if (lookup.key === undefined) return rejected("unknown_node")
      const claimed = message.public_key === "" ? undefined : decodeBase64(message.public_key)
      if (claimed !== undefined && !sameKey(claimed, lookup.key)) return rejected("key_mismatch")
      const challenge = trustHandshakeChallenge(message.node_id, me)
      if (!verifyChallenge(lookup.key, challenge, message.signature)) return rejected("bad_signature")
      if (now - lastReap >= 5 * 60 * 1000) {
        reap(replay, now)
        lastReap = now
      }
      const digest = replayDigest(message.type, challenge, message.signature)
      if (checkAndRecord(replay, digest, message.node_id, now) === "replay") return rejected("replay")
      return { _tag: "Authenticated", message, key: lookup.key }
    })

  const decide = (message: TrustMessage, key: Uint8Array, source: number) => {
    const peer = message.node_id
    switch (message.type) {
      case "handshake_request":
        relayed.delete(peer) // it reached us directly: answer directly
        return store.receiveRequest({
          node_id: peer,
          public_key: encodeBase64(key),
          justification: message.justification,
          registryBound: true,
          ...(source === peer ? {} : { source })
        })
      case "handshake_accept":
        return store.receiveAccept(peer, encodeBase64(key))
      case "handshake_reject":
        return store.receiveReject(peer)
      case "handshake_revoke":
        return store.receiveRevoke(peer)
    }
  }

  /** Reads, authenticates and applies one message; the effects to perform (none if it was refused). */
  const receive = (connection: Connection) =>
    Effect.gen(function*() {
      counters.received++
      const bytes = yield* readMessage(connection).pipe(Effect.timeoutOption(timing.receiveTimeout))
      const now = yield* Clock.currentTimeMillis
      let verdict: Verdict
      if (bytes._tag === "None") verdict = rejected("timeout")
      else {
        const decoded = decodeTrustMessage(bytes.value)
        verdict = Result.isFailure(decoded)
          ? rejected("malformed")
          : yield* authenticate(decoded.success, connection.remote.node, now)
      }
      if (verdict._tag === "Rejected") {
        rejections[verdict.reason] = (rejections[verdict.reason] ?? 0) + 1
        yield* Effect.logDebug("trust message refused", { from: connection.remote.node, reason: verdict.reason })
        return []
      }
      counters.authenticated++
      return yield* decide(verdict.message, verdict.key, connection.remote.node)
    }).pipe(
      Effect.catch((error) =>
        Effect.logDebug("trust stream failed", { from: connection.remote.node, error: error.message }).pipe(Effect.as([]))
      )
    )

  const serve = (connection: Connection) =>
    Effect.flatMap(receive(connection), (effects) =>
      Effect.all([
        Effect.sleep(timing.closeDelay).pipe(Effect.andThen(connection.close)),
        perform(effects)
      ], { concurrency: 2, discard: true }))

  const listener = yield* transport.listen(WellKnownPort.TrustHandshake).pipe(
    Effect.orDie // port 444 is ours: a second listener is a wiring bug
  )
  const streams = yield* FiberSet.make()
  yield* Effect.forkScoped(
    Effect.gen(function*() {
      while (true) {
        const connection = yield* listener.accept
        yield* FiberSet.run(streams, serve(connection))
      }
    }).pipe(Effect.catchTag("TransportError", () => Effect.void))
  )

  // ---------------------------------------------------------------------------------------------------------
  // Relayed handshakes: the poller
  // ---------------------------------------------------------------------------------------------------------

  const schedule = makePollSchedule()
  const wake = yield* Queue.dropping<void>(1)
  let stopping = false
  /** Completed when the next poll to *start* has finished (replaced as each poll starts). */
  let nextPollDone = Deferred.makeUnsafe<void>()

  const rememberRelayed = (peer: number) => {
    relayed.delete(peer)
    relayed.add(peer)
    if (relayed.size > MAX_RELAYED_PEERS) {
      const oldest = relayed.values().next()
      if (oldest.done !== true) relayed.delete(oldest.value)
    }
  }

  const pollOnce = Effect.gen(function*() {
    counters.polls++
    const reply = yield* signedCall({ type: "poll_handshakes", node_id: me }, pollHandshakesChallenge(me), "poll_handshakes_ok")
    const decoded = decodeRegistryReply(reply)
    if (Result.isFailure(decoded) || decoded.success.type !== "poll_handshakes_ok") {
      return yield* Effect.fail(new HandshakeError({ reason: "unreachable", detail: "malformed poll_handshakes_ok" }))
    }
    for (const request of decoded.success.requests) {
      counters.relayedRequests++
      const peer = request.from_node_id
      const lookup = yield* lookupKey(peer)
      const key = "failed" in lookup ? undefined : lookup.key
      rememberRelayed(peer)
      yield* perform(yield* store.receiveRequest({
        node_id: peer,
        justification: request.justification,
        // The registry authenticated the request with the key it holds for the sender.
        registryBound: key !== undefined,
        ...(key === undefined ? {} : { public_key: encodeBase64(key) })
      }))
    }
    for (const response of decoded.success.responses) {
      counters.relayedResponses++
      const peer = response.from_node_id
      if (!response.accept) {
        yield* perform(yield* store.receiveReject(peer))
        continue
      }
      const lookup = yield* lookupKey(peer)
      if ("failed" in lookup || lookup.key === undefined) {
        yield* Effect.logWarning("trust: relayed accept from a node without a registry key, ignored", { peer })
        continue
      }
      yield* perform(yield* store.receiveAccept(peer, encodeBase64(lookup.key)))
    }
  }).pipe(
    Effect.catch((error) =>
      Effect.sync(() => counters.pollFailures++).pipe(
        Effect.andThen(Effect.logWarning("trust: relayed-handshake poll failed", { error: error.message }))
      )
    )
  )

  const poller = Effect.gen(function*() {
    while (!stopping) {
      const now = yield* Clock.currentTimeMillis
      const due = nextPollAt(schedule, now, timing.poll)
      if (due > now) {
        yield* Queue.take(wake).pipe(Effect.timeoutOption(due - now))
        continue
      }
      recordPoll(schedule, now)
      const done = nextPollDone
      nextPollDone = Deferred.makeUnsafe<void>()
      yield* pollOnce
      Deferred.doneUnsafe(done, Effect.void)
    }
  })
  const pollerFiber = yield* Effect.forkScoped(poller)
  // Added after the fork, so it runs first at shutdown: a graceful stop that lets an in-flight poll finish.
  yield* addBoundedFinalizer(
    "stop the relayed-handshake poller",
    timing.pollStopTimeout,
    Effect.suspend(() => {
      stopping = true
      Queue.offerUnsafe(wake, undefined)
      return Fiber.await(pollerFiber)
    })
  )

  const wakePoller = () => void Queue.offerUnsafe(wake, undefined)

  // ---------------------------------------------------------------------------------------------------------
  // Local API
  // ---------------------------------------------------------------------------------------------------------

  const refusal = (peer: number) => (reason: TrustRefusal) =>
    new HandshakeError({ reason, detail: `node ${peer}: ${reason.replaceAll("_", " ")}` })

  const handshake = (peer: number, justification: string) =>
    Effect.gen(function*() {
      if (inFlight.has(peer)) {
        return yield* new HandshakeError({ reason: "in_flight", detail: `a handshake with node ${peer} is in flight` })
      }
      inFlight.add(peer)
      return yield* Effect.gen(function*() {
        yield* perform(yield* store.recordOutgoing(peer))
        const text = sanitizeJustification(justification)
        const route = yield* sendDirect(peer, "handshake_request", text).pipe(
          Effect.as("direct" as const),
          Effect.catch(() =>
            signedCall(
              { type: "request_handshake", from_node_id: me, to_node_id: peer, justification: text },
              trustHandshakeChallenge(me, peer),
              "request_handshake_ok"
            ).pipe(
              Effect.tap(() => Effect.sync(() => counters.sentRelayed++)),
              Effect.as("relayed" as const),
              Effect.mapError((error) => unreachable(peer, `not reachable directly nor via the registry: ${error.message}`))
            )
          )
        )
        armFastPolling(schedule, peer, yield* Clock.currentTimeMillis, timing.poll)
        wakePoller()
        return route
      }).pipe(Effect.ensuring(Effect.sync(() => inFlight.delete(peer))))
    })

  const approveWithKey = (peer: number) =>
    store.approve(peer).pipe(
      Effect.catchIf((reason) => reason === "no_public_key", () =>
        Effect.flatMap(lookupKey(peer), (lookup) =>
          "failed" in lookup || lookup.key === undefined
            ? Effect.fail<TrustRefusal>("no_public_key")
            : store.approve(peer, encodeBase64(lookup.key))))
    )

  const local = (
    peer: number,
    transition: Effect.Effect<ReadonlyArray<TrustEffect>, TrustRefusal>
  ): Effect.Effect<void, HandshakeError> =>
    transition.pipe(Effect.mapError(refusal(peer)), Effect.flatMap(perform))

  const waitForTrust = (peer: number, timeout: Duration.Input) =>
    Effect.gen(function*() {
      if (isTrusted(yield* store.state, peer)) return true
      const waiter = Deferred.makeUnsafe<void>()
      const set = waiters.get(peer) ?? new Set()
      waiters.set(peer, set.add(waiter))
      const woken = yield* Deferred.await(waiter).pipe(
        Effect.timeoutOption(timeout),
        Effect.ensuring(Effect.sync(() => {
          set.delete(waiter)
          if (set.size === 0 && waiters.get(peer) === set) waiters.delete(peer)
        }))
      )
      return woken._tag === "Some" || isTrusted(yield* store.state, peer)
    })

  const pollNow = Effect.suspend(() => {
    schedule.onDemand = true
    const done = nextPollDone
    wakePoller()
    return Deferred.await(done).pipe(Effect.timeoutOption(timing.onDemandWait), Effect.asVoid)
  })

  const service: HandshakeService = {
    handshake,
    approve: (peer) => local(peer, approveWithKey(peer)),
    reject: (peer) => local(peer, store.reject(peer)),
    revoke: (peer) => local(peer, store.revoke(peer)),
    waitForTrust,
    pollNow,
    stats: () => ({ ...counters, rejected: { ...rejections } })
  }
  return service
})

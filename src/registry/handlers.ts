/**
 * What each registry request does (reference §6, Appendix A): validation, authentication, privacy rules and
 * rate limits on top of a `RegistryStore`. Every request gets exactly one reply; every failure is an error
 * reply `{type:"error", error, code}` with a machine-readable code, and none changes state.
 *
 * Authentication: a signed request's `signature` must verify, with the Ed25519 key its node ID is bound to,
 * over the request's challenge string (`registryChallenge`). `register` may carry a signature over
 * `register:<listen_addr>:<public_key>` (pilotfish daemons always send one); Go daemons send none, so an
 * unsigned registration is accepted, and what it can do is bounded: it can only point the key's own node at an
 * endpoint, and the tunnel handshake (PILA) still requires the private key.
 *
 * Privacy ("private by default", reference §5): a node's real endpoint is revealed only to itself, to anyone
 * when the node is public, or to a node it shares a trust pair with (both sides reported, see store.ts) —
 * in `lookup`, `resolve` and `punch` alike.
 */
import { Clock, Duration, Effect, Metric, Schema } from "effect"
import { importEd25519PublicKey, verifyChallenge } from "../crypto/signing.ts"
import { decodeBase64 } from "../crypto/base64.ts"
import { formatAddr } from "../protocol/address.ts"
import type { JsonObject } from "../protocol/length-prefixed.ts"
import {
  decodeRegistryRequest,
  type RegistryErrorCode,
  type RegistryRequest,
  registryChallenge,
  registryErrorCodeOf,
  validateHostname
} from "../protocol/registry.ts"
import { TokenBuckets } from "../limits/token-bucket.ts"
import { formatHostPort, parseHostPort } from "../platform/host-port.ts"
import { countError, countRequest, storeLatencySeconds } from "./metrics.ts"
import type { ClientInfo, RequestHandler } from "./server.ts"
import { type NodeLease, RegistryStore, type RegistryStoreShape, type StoreError } from "./store.ts"

export interface HandlerOptions {
  /** New-key registrations allowed per source IP per minute (known keys are exempt). Default 10. */
  readonly registrationsPerMinute?: number
  /** Source IPs tracked by the rate limiter. Default 65536. */
  readonly rateLimitKeys?: number
}

/** A relayed handshake's justification longer than this is refused (`too_large`). */
export const MAX_JUSTIFICATION_BYTES = 1024

/** A refusal: becomes an error reply. */
class Refused extends Schema.TaggedError<Refused>()("Refused", { code: Schema.String, detail: Schema.String }) {}

const refuse = (code: RegistryErrorCode, detail: string) => Effect.fail(new Refused({ code, detail }))

const unixSeconds = (ms: number) => Math.floor(ms / 1000)
const addressOf = (nodeId: number) => formatAddr({ network: 0, node: nodeId })

const UNSPECIFIED_HOSTS = new Set(["0.0.0.0", "::"])

/** The client's IP without the IPv4-mapped prefix a dual-stack listener adds. */
const plainIp = (ip: string) => (ip.startsWith("::ffff:") ? ip.slice(7) : ip)

/**
 * The endpoint a node is reachable at: its claimed listen address, with an unspecified host (`:4000`,
 * `0.0.0.0:4000`) replaced by the IP the registry sees the node's TCP connection come from.
 */
export const sanitizeListenAddr = (listenAddr: string, clientIp: string): string | undefined => {
  const claimed = parseHostPort(listenAddr)
  if (typeof claimed === "string" || claimed.port === 0) return undefined
  const host = claimed.host === undefined || UNSPECIFIED_HOSTS.has(claimed.host) ? plainIp(clientIp) : claimed.host
  if (host === "" || host.length > 253 || /[\s/[\]]/.test(host)) return undefined
  return formatHostPort({ host, port: claimed.port })
}

/** Wraps every store operation with a latency measurement labelled by operation name. */
const instrument = (store: RegistryStoreShape): RegistryStoreShape =>
  Object.fromEntries(
    Object.entries(store).map(([operation, f]) => [
      operation,
      (...args: ReadonlyArray<unknown>) =>
        (f as (...a: ReadonlyArray<unknown>) => Effect.Effect<unknown, StoreError>)(...args).pipe(
          Effect.trackDuration(Metric.withAttributes(storeLatencySeconds, { operation }), Duration.toSeconds)
        )
    ])
  ) as unknown as RegistryStoreShape

/** Imported Ed25519 keys by base64 form; importing costs more than verifying, and keys repeat. */
const makeKeyCache = (capacity: number) => {
  const cache = new Map<string, ReturnType<typeof importEd25519PublicKey>>()
  return (base64: string) => {
    let key = cache.get(base64)
    if (key === undefined) {
      const raw = decodeBase64(base64)
      key = raw === undefined ? undefined : importEd25519PublicKey(raw)
      if (cache.size >= capacity) cache.delete(cache.keys().next().value!)
      cache.set(base64, key)
    }
    return key
  }
}

export const makeRequestHandler = Effect.fnUntraced(function*(options: HandlerOptions = {}) {
  const store = instrument(yield* RegistryStore)
  const perMinute = options.registrationsPerMinute ?? 10
  const registrations = new TokenBuckets<string>({
    burst: perMinute,
    perSecond: perMinute / 60,
    maxKeys: options.rateLimitKeys ?? 65536
  })
  const keyOf = makeKeyCache(4096)

  /** Checks `signature` over `challenge` with the key `nodeId` is bound to. */
  const authenticate = (nodeId: number, challenge: string, signature: string | undefined) =>
    Effect.gen(function*() {
      const bound = yield* store.boundKey(nodeId)
      if (bound === undefined) return yield* refuse("node_not_found", `node ${nodeId} is not registered`)
      if (signature === undefined) return yield* refuse("signature_required", `sign "${challenge}" with node ${nodeId}'s key`)
      const key = keyOf(bound)
      if (key === undefined || !verifyChallenge(key, challenge, signature)) {
        return yield* refuse("invalid_signature", `signature does not verify for node ${nodeId}`)
      }
    })

  const liveLease = (nodeId: number, nowMs: number) =>
    Effect.flatMap(store.lease(nodeId, nowMs), (lease) =>
      lease === undefined ? refuse("node_not_found", `node ${nodeId} is not online`) : Effect.succeed(lease))

  const mayReveal = (target: NodeLease, requester: number) =>
    target.public || target.nodeId === requester ? Effect.succeed(true) : store.hasTrust(target.nodeId, requester)

  const handle = (request: RegistryRequest, client: ClientInfo, nowMs: number): Effect.Effect<JsonObject, Refused | StoreError> =>
    Effect.gen(function*() {
      const challenge = registryChallenge(request)
      const signature = "signature" in request ? request.signature : undefined
      switch (request.type) {
        case "register": {
          const realAddr = sanitizeListenAddr(request.listen_addr, client.ip)
          if (realAddr === undefined) return yield* refuse("bad_request", `listen_addr "${request.listen_addr}" is not host:port`)
          if (signature !== undefined) {
            const key = keyOf(request.public_key)
            if (key === undefined || !verifyChallenge(key, challenge!, signature)) {
              return yield* refuse("invalid_signature", "registration signature does not verify with public_key")
            }
          }
          const known = yield* store.nodeIdOfKey(request.public_key)
          if (known === undefined && !registrations.take(client.ip, nowMs)) {
            return yield* refuse("rate_limited", `more than ${perMinute} new registrations per minute from ${client.ip}`)
          }
          const wanted = request.hostname === undefined || request.hostname === "" ? undefined : request.hostname
          const hostnameError = wanted === undefined ? undefined : validateHostname(wanted)
          const outcome = yield* store.register({
            publicKey: request.public_key,
            realAddr,
            relayOnly: request.relay_only ?? false,
            nowMs,
            ...(wanted !== undefined && hostnameError === undefined ? { hostname: wanted } : {}),
            ...(request.owner === undefined ? {} : { owner: request.owner }),
            ...(request.version === undefined ? {} : { version: request.version })
          })
          if (outcome._tag === "Full") return yield* refuse("registry_full", "no node ID left to allocate")
          const { lease } = outcome
          const hostnameProblem = hostnameError ?? (outcome.hostnameTaken ? `hostname "${wanted}" is taken` : undefined)
          const port = realAddr.slice(realAddr.lastIndexOf(":") + 1)
          return {
            type: "register_ok",
            node_id: lease.nodeId,
            network_id: 0,
            address: addressOf(lease.nodeId),
            public_key: lease.publicKey,
            ...(lease.hostname === undefined ? {} : { hostname: lease.hostname }),
            ...(hostnameProblem === undefined ? {} : { hostname_error: hostnameProblem }),
            ...(client.ip === "" ? {} : { observed_addr: formatHostPort({ host: plainIp(client.ip), port: Number(port) }) })
          }
        }
        case "heartbeat": {
          yield* authenticate(request.node_id, challenge!, signature)
          if (!(yield* store.heartbeat(request.node_id, nowMs))) {
            return yield* refuse("node_not_found", `node ${request.node_id} has no live lease; register again`)
          }
          return { type: "heartbeat_ok", time: unixSeconds(nowMs) }
        }
        case "lookup": {
          const lease = yield* liveLease(request.node_id, nowMs)
          return {
            type: "lookup_ok",
            node_id: lease.nodeId,
            address: addressOf(lease.nodeId),
            networks: [0],
            public_key: lease.publicKey,
            public: lease.public,
            polo_score: 0,
            relay_only: lease.relayOnly,
            last_seen_unix: unixSeconds(lease.lastSeenMs),
            ...(lease.hostname === undefined ? {} : { hostname: lease.hostname }),
            ...(lease.tags.length === 0 ? {} : { tags: lease.tags }),
            ...(lease.public ? { real_addr: lease.realAddr } : {})
          }
        }
        case "resolve": {
          yield* authenticate(request.requester_id, challenge!, signature)
          const target = yield* liveLease(request.node_id, nowMs)
          if (!(yield* mayReveal(target, request.requester_id))) {
            return yield* refuse("not_authorized", `node ${request.node_id} is private and has no trust pair with ${request.requester_id}`)
          }
          return { type: "resolve_ok", node_id: target.nodeId, real_addr: target.realAddr, relay_only: target.relayOnly }
        }
        case "set_hostname": {
          yield* authenticate(request.node_id, challenge!, signature)
          const outcome = yield* store.setHostname(request.node_id, request.hostname, nowMs)
          if (outcome === "not_found") return yield* refuse("node_not_found", `node ${request.node_id} is not online`)
          if (outcome === "taken") return yield* refuse("hostname_taken", `hostname "${request.hostname}" is taken`)
          return { type: "set_hostname_ok", node_id: request.node_id, hostname: request.hostname }
        }
        case "resolve_hostname": {
          const nodeId = yield* store.resolveHostname(request.hostname, nowMs)
          if (nodeId === undefined) return yield* refuse("hostname_not_found", `no node is named "${request.hostname}"`)
          const lease = yield* liveLease(nodeId, nowMs)
          return { type: "resolve_hostname_ok", node_id: nodeId, address: addressOf(nodeId), public: lease.public, hostname: request.hostname }
        }
        case "set_visibility": {
          yield* authenticate(request.node_id, challenge!, signature)
          if ((yield* store.setVisibility(request.node_id, request.public, nowMs)) === "not_found") {
            return yield* refuse("node_not_found", `node ${request.node_id} is not online`)
          }
          return { type: "set_visibility_ok", node_id: request.node_id, visibility: request.public ? "public" : "private" }
        }
        case "set_tags": {
          yield* authenticate(request.node_id, challenge!, signature)
          if ((yield* store.setTags(request.node_id, request.tags, nowMs)) === "not_found") {
            return yield* refuse("node_not_found", `node ${request.node_id} is not online`)
          }
          return { type: "set_tags_ok", node_id: request.node_id, tags: request.tags }
        }
        case "deregister": {
          yield* authenticate(request.node_id, challenge!, signature)
          yield* store.deregister(request.node_id)
          return { type: "deregister_ok" }
        }
        case "report_trust": {
          yield* authenticate(request.node_id, challenge!, signature)
          if ((yield* store.boundKey(request.peer_id)) === undefined) {
            return yield* refuse("node_not_found", `node ${request.peer_id} is not registered`)
          }
          if ((yield* store.reportTrust(request.node_id, request.peer_id)) === "full") {
            return yield* refuse("registry_full", "the trust table is full")
          }
          return { type: "report_trust_ok" }
        }
        case "revoke_trust": {
          yield* authenticate(request.node_id, challenge!, signature)
          yield* store.revokeTrust(request.node_id, request.peer_id)
          return { type: "revoke_trust_ok" }
        }
        case "request_handshake": {
          yield* authenticate(request.from_node_id, challenge!, signature)
          if (Buffer.byteLength(request.justification) > MAX_JUSTIFICATION_BYTES) {
            return yield* refuse("too_large", `justification exceeds ${MAX_JUSTIFICATION_BYTES} bytes`)
          }
          if ((yield* store.boundKey(request.to_node_id)) === undefined) {
            return yield* refuse("node_not_found", `node ${request.to_node_id} is not registered`)
          }
          const pushed = yield* store.pushInbox(request.to_node_id, {
            kind: "request",
            fromNodeId: request.from_node_id,
            justification: request.justification,
            signature: signature!
          })
          if (pushed === "full") return yield* refuse("inbox_full", `node ${request.to_node_id}'s handshake inbox is full`)
          return { type: "request_handshake_ok" }
        }
        case "poll_handshakes": {
          yield* authenticate(request.node_id, challenge!, signature)
          const inbox = yield* store.drainInbox(request.node_id)
          return {
            type: "poll_handshakes_ok",
            requests: inbox.requests.map((r) => ({ from_node_id: r.fromNodeId, justification: r.justification })),
            responses: inbox.responses.map((r) => ({ from_node_id: r.fromNodeId, accept: r.accept }))
          }
        }
        case "respond_handshake": {
          yield* authenticate(request.node_id, challenge!, signature)
          if ((yield* store.boundKey(request.peer_id)) === undefined) {
            return yield* refuse("node_not_found", `node ${request.peer_id} is not registered`)
          }
          const pushed = yield* store.pushInbox(request.peer_id, { kind: "response", fromNodeId: request.node_id, accept: request.accept })
          if (pushed === "full") return yield* refuse("inbox_full", `node ${request.peer_id}'s handshake inbox is full`)
          return { type: "respond_handshake_ok" }
        }
        case "punch": {
          yield* authenticate(request.requester_id, challenge!, signature)
          if (request.requester_id !== request.node_a && request.requester_id !== request.node_b) {
            return yield* refuse("not_authorized", "only a participant may request a punch")
          }
          const a = yield* liveLease(request.node_a, nowMs)
          const b = yield* liveLease(request.node_b, nowMs)
          const other = request.requester_id === a.nodeId ? b : a
          if (!(yield* mayReveal(other, request.requester_id))) {
            return yield* refuse("not_authorized", `node ${other.nodeId} is private and has no trust pair with ${request.requester_id}`)
          }
          return { type: "punch_ok", node_a: a.nodeId, node_a_addr: a.realAddr, node_b: b.nodeId, node_b_addr: b.realAddr }
        }
        case "beacon_register": {
          const addr = sanitizeListenAddr(request.addr, client.ip)
          if (addr === undefined) return yield* refuse("bad_request", `addr "${request.addr}" is not host:port`)
          if ((yield* store.registerBeacon({ beaconId: request.beacon_id, addr }, nowMs)) === "full") {
            return yield* refuse("registry_full", "the beacon table is full")
          }
          return { type: "beacon_register_ok", beacon_id: request.beacon_id }
        }
        case "beacon_list": {
          const beacons = yield* store.listBeacons(nowMs)
          return { type: "beacon_list_ok", beacons: beacons.map((b) => ({ id: b.beaconId, addr: b.addr })) }
        }
        case "rotate_key": {
          yield* authenticate(request.node_id, challenge!, signature)
          const outcome = yield* store.rotateKey(request.node_id, request.new_public_key)
          if (outcome === "not_found") return yield* refuse("node_not_found", `node ${request.node_id} is not registered`)
          if (outcome === "key_in_use") return yield* refuse("bad_request", "new_public_key is already bound to another node")
          return { type: "rotate_key_ok", node_id: request.node_id, address: addressOf(request.node_id), public_key: request.new_public_key }
        }
      }
    })

  const handler: RequestHandler = (json, client) =>
    Effect.gen(function*() {
      const decoded = decodeRegistryRequest(json)
      if (decoded._tag === "Failure") {
        const code = registryErrorCodeOf(decoded.failure)
        yield* countRequest("invalid")
        yield* countError(code)
        return { type: "error", error: decoded.failure.message, code }
      }
      const request = decoded.success
      yield* countRequest(request.type)
      const nowMs = yield* Clock.currentTimeMillis
      return yield* handle(request, client, nowMs).pipe(
        Effect.catchTags({
          Refused: (r) => Effect.succeed<JsonObject>({ type: "error", error: r.detail, code: r.code }),
          StoreError: (e) =>
            Effect.logWarning("registry store failed", e).pipe(
              Effect.as<JsonObject>({ type: "error", error: e.message, code: "internal" })
            )
        }),
        Effect.tap((reply) => (reply["type"] === "error" ? countError(String(reply["code"])) : Effect.void))
      )
    })
  return handler
})

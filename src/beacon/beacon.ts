/**
 * The beacon shell (`pilot-beacon`, reference §7): one UDP socket whose datagrams feed the pure core
 * (beacon-state.ts), plus the background work around it, all fibers of the caller's scope.
 *
 * Startup (DESIGN.md §4 rule 3): `makeBeacon` binds the socket and starts serving before any outbound work;
 * registration with the registry, the peer list and gossip run in the background and never delay a reply.
 * "Serving" (the socket is bound and its loops run) and "registered" are separate, observable states
 * (`registration`). With no registry configured the beacon serves alone, with its static `--peers` if any.
 *
 * Background loops:
 * - registration: `beacon_register {beacon_id, addr}` every `registerInterval` (30 s; the registry forgets a
 *   beacon after 60 s), capped exponential backoff with jitter after a failure;
 * - peers: every `listInterval` (60 s, first pass at once, backoff after a failure) the peer set becomes static
 *   `--peers` ∪ the registry's `beacon_list`, minus ourselves (our beacon ID or our advertised address). A failed
 *   list keeps the last listed set: a registry outage must not cut beacons off from each other;
 * - gossip: Sync of our live nodes to every peer every `gossipInterval` (10 s);
 * - sweep: node and ownership expiry, rate-limit bucket pruning, every `sweepInterval` (10 s).
 * Every registry call carries the client's deadline, so no loop can wedge on a half-open connection.
 *
 * Supervision: the socket's reader and writer and the background loops run under one `supervise`, forked into
 * the caller's scope; `failure` joins it, so the first loop to die ends the beacon (the binary maps that to exit 4).
 * Closing the scope interrupts and joins every loop, then closes the socket.
 *
 * Logging: Info for state changes (serving, registered, registration lost, peer beacon heard or silent, peer set
 * changed); per-datagram detail only at Debug.
 */
import { Clock, Duration, Effect, Fiber, Queue, Random, Result, Runtime, Schedule, Schema, Semaphore } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import { lookup } from "node:dns/promises"
import { backoffDelayMillis, type BackoffPolicy } from "../lifecycle/backoff.ts"
import { type EssentialFiberFailed, supervise } from "../lifecycle/supervisor.ts"
import { inetAddress, makeUdpEndpoint, type UdpStats } from "../net/udp-endpoint.ts"
import { ExitCode } from "../platform/exit-codes.ts"
import { formatHostPort, type HostPort, parseHostPort } from "../platform/host-port.ts"
import { makeRegistryClient, type RegistryClient } from "../registry/client.ts"
import { type AddressAdapter, type BeaconCoreConfig, type BeaconEvent, BeaconState, type BeaconStats } from "./beacon-state.ts"
import { registerBeaconMetrics } from "./metrics.ts"

/** The beacon's UDP socket could not be bound (a port in use, an address not on this host): exit code 3. */
export class BeaconBindError extends Schema.TaggedError<BeaconBindError>()("BeaconBindError", {
  addr: Schema.String,
  detail: Schema.String
}) {
  override readonly [Runtime.errorExitCode] = ExitCode.startup
  get code(): string {
    return "bind_failed"
  }
  override get message(): string {
    return `cannot bind the beacon's UDP socket ${this.addr}: ${this.detail}`
  }
}

export interface BeaconOptions {
  readonly bind: HostPort
  /** Non-zero u32; default a random one chosen at start (logged). */
  readonly beaconId?: number
  /** Registry to register with and list peer beacons from; none: serve alone. */
  readonly registry?: { readonly host: string; readonly port: number; readonly callTimeout?: Duration.Input }
  /** The host to register with the bound port; default none: `:<port>`, the registry filling in the IP it sees. */
  readonly advertiseHost?: string
  /** Static peer beacons, `host:port` (an IP or a DNS name). */
  readonly peers?: ReadonlyArray<string>
  /** Default 30 s (reference). */
  readonly registerInterval?: Duration.Input
  /** Default 60 s (reference: beacon list refresh). */
  readonly listInterval?: Duration.Input
  /** Default 10 s (reference). */
  readonly gossipInterval?: Duration.Input
  /** Default 10 s. */
  readonly sweepInterval?: Duration.Input
  /** Registry retry delays. Default from 500 ms, capped at 30 s. */
  readonly backoff?: { readonly base?: Duration.Input; readonly cap?: Duration.Input }
  /** Limits of the core (node TTL and caps, rate limits…). */
  readonly core?: Omit<BeaconCoreConfig, "beaconId">
  /** UDP send queue. Default 65 536 datagrams (a Sync round of 500k nodes is ~1700 datagrams per peer). */
  readonly sendQueue?: number
  /** Whether to publish the Prometheus series (default true). Tests running several beacons turn it off. */
  readonly metrics?: boolean
}

export interface BeaconRegistration {
  /** Whether a registry is configured at all. */
  readonly configured: boolean
  /** Whether the last `beacon_register` succeeded. */
  readonly registered: boolean
  readonly lastOkMillis: number | undefined
  readonly consecutiveFailures: number
  readonly lastError: string | undefined
  /** Peer beacons the last successful `beacon_list` returned (ourselves excluded). */
  readonly listedPeers: number
}

export interface Beacon {
  /** The bound socket address (the real port when bound to port 0). */
  readonly address: NetAddress.InetAddress
  readonly beaconId: number
  readonly stats: () => BeaconStats & { readonly udp: UdpStats }
  /** The registry side, live. */
  readonly registration: () => BeaconRegistration
  /** Keys (`ip|port`) of the peer beacons currently installed. */
  readonly peers: () => ReadonlyArray<string>
  /** Fails with the first abnormal ending of a beacon loop; never succeeds. */
  readonly failure: Effect.Effect<never, EssentialFiberFailed>
}

/** IPv4-mapped IPv6 text (`::ffff:a.b.c.d`, what a dual-stack socket reports) as the plain IPv4 it is. */
const plainIp = (address: NetAddress.InetAddress): string => {
  const ip = NetAddress.formatIp(address.address)
  return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip
}

export const inetAdapter: AddressAdapter<NetAddress.InetAddress> = {
  key: (a) => `${plainIp(a)}|${a.port}`,
  endpoint: (a) => ({ ip: plainIp(a), port: a.port }),
  ip: plainIp
}

/** A random non-zero u32. */
const randomBeaconId = Effect.map(Random.nextIntBetween(1, 0xffffffff), (n) => n >>> 0 || 1)

const millis = (input: Duration.Input): number => Duration.toMillis(Duration.fromInputUnsafe(input))

/** `host:port` → an address to send to; DNS names are looked up (bounded); `:port` means this host. */
const resolvePeer = (text: string, ipv6: boolean): Effect.Effect<NetAddress.InetAddress, string> => {
  const parsed = parseHostPort(text)
  if (typeof parsed === "string") return Effect.fail(parsed)
  const host = parsed.host ?? (ipv6 ? "::1" : "127.0.0.1")
  const literal = inetAddress(host, parsed.port)
  if (literal !== undefined) return Effect.succeed(literal)
  return Effect.tryPromise({
    try: () => lookup(host, { family: ipv6 ? 6 : 4 }),
    catch: (e) => `cannot resolve ${host}: ${(e as Error).message}`
  }).pipe(
    Effect.timeoutOrElse({ duration: "3 seconds", orElse: () => Effect.fail(`cannot resolve ${host}: timed out`) }),
    Effect.flatMap((found) => {
      const address = inetAddress(found.address, parsed.port)
      return address === undefined ? Effect.fail(`${host} resolved to ${found.address}, not an IP`) : Effect.succeed(address)
    })
  )
}

const describeEvent = (event: BeaconEvent, wakePeerList: () => void): Effect.Effect<void> => {
  switch (event._tag) {
    case "PeerHeard":
      return Effect.logInfo("peer beacon heard").pipe(
        Effect.annotateLogs({ peer: event.peer.replace("|", ":"), peer_beacon_id: event.beaconId, nodes: event.nodes })
      )
    case "PeerSilent":
      return Effect.logInfo("peer beacon silent: its nodes expire").pipe(
        Effect.annotateLogs({ peer: event.peer.replace("|", ":"), peer_beacon_id: event.beaconId ?? "unknown" })
      )
    case "UnknownPeerSynced":
      // A beacon that registered after our last list: ask the registry again now rather than in a minute.
      return Effect.sync(wakePeerList)
  }
}

/** The soonest a Sync from an unknown beacon may trigger another `beacon_list` (anyone can send one). */
const EARLY_LIST_INTERVAL_MS = 5_000

/** Binds the socket in the caller's scope and starts serving; returns once the socket is bound. */
export const makeBeacon = Effect.fnUntraced(function*(options: BeaconOptions) {
  const clock = yield* Clock.Clock
  const beaconId = options.beaconId ?? (yield* randomBeaconId)
  const core = new BeaconState<NetAddress.InetAddress>({ ...options.core, beaconId }, inetAdapter)
  const events = yield* Queue.dropping<BeaconEvent>(1024)
  const listWake = yield* Queue.dropping<void>(1)

  const flushEvents = () => {
    for (const event of core.takeEvents()) Queue.offerUnsafe(events, event)
  }

  // Forward reference: the socket's handler sends through the endpoint it is given to.
  const late: { send?: (bytes: Uint8Array, to: NetAddress.InetAddress) => boolean } = {}
  const udp = yield* makeUdpEndpoint(
    { bind: options.bind, sendQueue: options.sendQueue ?? 65_536 },
    (datagram) => {
      const out = core.receive(datagram.payload, datagram.from, clock.currentTimeMillisUnsafe())
      for (const o of out) late.send!(o.bytes, o.to)
      flushEvents()
    }
  ).pipe(Effect.mapError((e) => new BeaconBindError({ addr: formatHostPort(options.bind), detail: e.message })))
  late.send = udp.send
  const ipv6 = udp.address._tag === "InetAddressV6"
  const bound = formatHostPort({ host: NetAddress.formatIp(udp.address.address), port: udp.address.port })
  const advertise = options.advertiseHost === undefined ? `:${udp.address.port}` : formatHostPort({ host: options.advertiseHost, port: udp.address.port })
  const registerInterval = options.registerInterval ?? "30 seconds"
  const listInterval = options.listInterval ?? "60 seconds"
  const gossipInterval = options.gossipInterval ?? "10 seconds"
  const sweepInterval = options.sweepInterval ?? "10 seconds"
  const policy: BackoffPolicy = {
    baseMillis: millis(options.backoff?.base ?? "500 millis"),
    capMillis: millis(options.backoff?.cap ?? "30 seconds")
  }

  const registration = {
    configured: options.registry !== undefined,
    registered: false,
    lastOkMillis: undefined as number | undefined,
    consecutiveFailures: 0,
    lastError: undefined as string | undefined,
    listedPeers: 0
  }

  // ---- peer set: static ∪ listed, minus ourselves
  const staticPeers = options.peers ?? []
  let listed: ReadonlyArray<string> = []
  const selfKeys = new Set([inetAdapter.key(udp.address)])
  const unresolved = new Set<string>()
  // One refresh at a time: a slow DNS lookup of the first pass must not overwrite a newer list.
  const refreshing = yield* Semaphore.make(1)
  const refreshPeers = refreshing.withPermits(1)(Effect.gen(function*() {
    const texts = [...new Set([...staticPeers, ...listed])]
    const addresses: Array<NetAddress.InetAddress> = []
    for (const text of texts) {
      const resolved = yield* Effect.result(resolvePeer(text, ipv6))
      if (Result.isFailure(resolved)) {
        if (!unresolved.has(text)) yield* Effect.logWarning(`peer beacon ${text} skipped: ${resolved.failure}`)
        unresolved.add(text)
        continue
      }
      unresolved.delete(text)
      // Our own address, as the registry lists it or as an operator lists every beacon in --peers.
      const key = inetAdapter.key(resolved.success)
      if (selfKeys.has(key) || (isUnspecifiedBind() && resolved.success.port === udp.address.port && isLocal(resolved.success))) continue
      addresses.push(resolved.success)
    }
    const before = new Set(core.peers())
    core.setPeers(addresses)
    const after = core.peers()
    if (after.length !== before.size || after.some((k) => !before.has(k))) {
      yield* Effect.logInfo("peer beacons changed").pipe(Effect.annotateLogs({ peers: after.map((k) => k.replace("|", ":")).join(",") || "none" }))
    }
  }))
  const isUnspecifiedBind = () => NetAddress.isUnspecified(udp.address.address)
  const isLocal = (a: NetAddress.InetAddress) => NetAddress.isLoopback(a.address)

  // ---- registry loops
  const withBackoff = <A, E>(name: string, call: Effect.Effect<A, E>, interval: Duration.Input | Effect.Effect<void>, onOk: (a: A) => Effect.Effect<void>, onError: (e: E, attempt: number) => Effect.Effect<void>) =>
    Effect.gen(function*() {
      let failures = 0
      while (true) {
        const outcome = yield* Effect.result(call)
        if (Result.isSuccess(outcome)) {
          failures = 0
          yield* onOk(outcome.success)
          yield* (Effect.isEffect(interval) ? interval : Effect.sleep(interval))
        } else {
          failures++
          yield* onError(outcome.failure, failures)
          yield* Effect.sleep(backoffDelayMillis(failures, policy, yield* Random.next))
        }
      }
    }).pipe(Effect.annotateLogs("loop", name))

  const registryLoops = (client: RegistryClient) => {
    const register = client.call({ type: "beacon_register", beacon_id: beaconId, addr: advertise })
    const registerLoop = withBackoff("register", register, registerInterval, () =>
      Effect.gen(function*() {
        const wasRegistered = registration.registered
        registration.registered = true
        registration.lastOkMillis = clock.currentTimeMillisUnsafe()
        registration.consecutiveFailures = 0
        registration.lastError = undefined
        if (!wasRegistered) yield* Effect.logInfo("registered with the registry").pipe(Effect.annotateLogs({ advertise }))
      }), (error, attempt) =>
      Effect.gen(function*() {
        const wasRegistered = registration.registered
        registration.registered = false
        registration.consecutiveFailures++
        registration.lastError = error.message
        if (wasRegistered) yield* Effect.logWarning("registration with the registry lost", error)
        else if (attempt === 1 || attempt % 10 === 0) yield* Effect.logWarning(`registration attempt ${attempt} failed; retrying with backoff`, error)
        else yield* Effect.logDebug(`registration attempt ${attempt} failed`, error)
      }))
    const list = Effect.flatMap(client.call({ type: "beacon_list" }), (reply) => {
      const beacons = Array.isArray(reply["beacons"]) ? reply["beacons"] as ReadonlyArray<unknown> : []
      const others: Array<string> = []
      for (const b of beacons) {
        if (typeof b !== "object" || b === null) continue
        const { id, addr } = b as { id?: unknown; addr?: unknown }
        if (id === beaconId || typeof addr !== "string") continue
        others.push(addr)
      }
      return Effect.succeed(others)
    })
    // The interval, cut short by a Sync from an unknown beacon — but never below EARLY_LIST_INTERVAL.
    const listMillis = millis(listInterval)
    const earliest = Math.min(EARLY_LIST_INTERVAL_MS, listMillis)
    const untilNextList = Effect.sleep(earliest).pipe(
      Effect.andThen(Queue.take(listWake).pipe(Effect.timeoutOption(listMillis - earliest))),
      Effect.asVoid
    )
    const listLoop = withBackoff("peer-list", list, untilNextList, (others) =>
      Effect.suspend(() => {
        listed = others
        registration.listedPeers = others.length
        return refreshPeers
      }), (error, attempt) => (attempt === 1 ? Effect.logWarning("beacon_list failed; keeping the last peer list", error) : Effect.logDebug("beacon_list failed", error)))
    return { register: registerLoop, list: listLoop }
  }

  const gossip = Effect.sync(() => {
    for (const o of core.gossip(clock.currentTimeMillisUnsafe())) udp.send(o.bytes, o.to)
  }).pipe(Effect.repeat(Schedule.spaced(gossipInterval)), Effect.andThen(Effect.never))
  const sweep = Effect.sync(() => {
    core.sweep(clock.currentTimeMillisUnsafe())
    flushEvents()
  }).pipe(Effect.delay(sweepInterval), Effect.repeat(Schedule.forever), Effect.andThen(Effect.never))
  const announce = Effect.gen(function*() {
    while (true) yield* describeEvent(yield* Queue.take(events), () => Queue.offerUnsafe(listWake, undefined))
  })

  if (options.metrics ?? true) {
    yield* registerBeaconMetrics({ stats: () => core.stats(), sendQueueDrops: () => udp.stats().sendQueueDrops, registered: () => registration.registered })
  }

  let loops: Record<string, Effect.Effect<unknown, unknown>> = {
    "beacon-udp-reader": udp.reader,
    "beacon-udp-writer": udp.writer,
    "beacon-gossip": gossip,
    "beacon-sweep": sweep,
    "beacon-events": announce,
    // Static peers are installed at once, whether or not a registry ever answers (dmsg.md §8 item 3).
    "beacon-static-peers": refreshPeers.pipe(Effect.andThen(Effect.never))
  }
  if (options.registry !== undefined) {
    const client = yield* makeRegistryClient({ host: options.registry.host, port: options.registry.port, callTimeout: options.registry.callTimeout ?? "8 seconds" })
    const { list, register } = registryLoops(client)
    loops = { ...loops, "beacon-register": register, "beacon-peer-list": list }
  }
  const serving = yield* Effect.forkScoped(supervise(loops))
  yield* Effect.logInfo("pilot-beacon serving").pipe(Effect.annotateLogs({
    addr: bound,
    beacon_id: beaconId,
    registry: options.registry === undefined ? "none" : `${options.registry.host}:${options.registry.port}`,
    peers: staticPeers.join(",") || "none"
  }))

  const beacon: Beacon = {
    address: udp.address,
    beaconId,
    stats: () => ({ ...core.stats(), udp: udp.stats() }),
    registration: () => ({ ...registration }),
    peers: () => core.peers(),
    failure: Fiber.join(serving)
  }
  return beacon
})

/** Live details for `/health` and `/ready`. */
export const beaconDetails = (beacon: Beacon): Record<string, unknown> => {
  const stats = beacon.stats()
  const reg = beacon.registration()
  return {
    beacon_id: beacon.beaconId,
    addr: NetAddress.formatInet(beacon.address),
    nodes: stats.nodes,
    peer_beacons: stats.peers,
    peer_owned_nodes: stats.ownedByPeers,
    registry: reg.configured
      ? { registered: reg.registered, consecutive_failures: reg.consecutiveFailures, last_error: reg.lastError ?? null, listed_peers: reg.listedPeers }
      : "none"
  }
}

/**
 * The tunnel shell (reference §3.3, §4, §8.7; DESIGN.md §3-§4): encrypted UDP tunnels to peers on one real
 * socket, wiring the pure cores — key-exchange decisions (`PeerTable`), registry-key cache, replay windows,
 * PILF reassembly — to the socket, the session keys and the layer above.
 *
 * Receiving, per datagram, synchronously in the UDP reader's callback:
 * - PILS (the hot path): sender → session → AEAD open → replay admit (only after a successful open, so a
 *   forged frame moves nothing) → decode the inner packet → the core (`Decrypted`, which also checks the
 *   identity binding) → `onPacket`. Failures feed the core too (`DecryptRejected`, `NoSession`): its drop
 *   gates and key requests depend on them.
 * - PILA / PILK: a per-source-IP token bucket first (before any crypto or lookup), then a bounded queue to the
 *   KX worker fiber, which authenticates them (kx-authenticator.ts: registry lookups are asynchronous) and
 *   feeds the core.
 * - PILF: one bounded `Reassembler` keyed by the real source endpoint; a completed frame goes back through
 *   the same demultiplexer (every crypto check still applies). A PILF inside a PILF is malformed.
 * - Anything else (PILT, PILP, beacon messages, unknown magics, malformed frames) is counted and dropped,
 *   never logged above Debug.
 *
 * Sending: `send(node, packet)` seals under the peer's session and hands the frame to the UDP writer queue,
 * never blocking; without a session the packet goes to the core, which queues it and starts a key exchange.
 * Frames over 1223 bytes leave as PILF fragments.
 *
 * The core's actions are performed in order by `perform`. The shell holds, per peer, only what the core
 * cannot: the derived `SessionKeys` and `ReplayGuard` (keyed by the core's `SessionId`, so an action about a
 * replaced session is a no-op) and the address to send to. Peers the core forgets are forgotten here too.
 *
 * Where the shell had to decide:
 * - Addresses: a learned endpoint (the core's `LearnEndpoint`) wins; before one is known, `endpointOf` (the
 *   registry) is asked when a key exchange must go out, one lookup per peer at a time, in a fiber of its own
 *   so neither the socket reader nor the KX worker waits on it. `ResetPath` (give-up) forgets the address, so
 *   the next key exchange asks `endpointOf` again before falling back to the last learned endpoint. An
 *   answer to a KX frame (`replyTo`) goes to that frame's source and leaves the address alone.
 * - No beacon exists yet: `path: "relay"` key exchanges go to the direct address, and nothing is relayed.
 * - The PILA/PILK bytes are built and signed once per tunnel (kx-frames.ts).
 * - NAT keepalives (reference §4.6): every peer with a session and an address that sent nothing for
 *   `keepaliveIntervalMs` gets an empty Control packet to port 0, unless it has been idle (no application
 *   traffic either way) for `idleAfterMs`. Judged per tick, so the hot path reads no clock for it.
 * - Time is monotonic milliseconds from Effect's `Clock` (wall-clock steps must not fire retransmits or
 *   expire sessions).
 */
import { randomInt } from "node:crypto"
import { Clock, type Duration, Effect, FiberSet, Queue, Result, type Scope } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import type { DatagramSocketError } from "effect/socket/DatagramSocket"
import type { Identity } from "../crypto/identity.ts"
import { ReplayGuard } from "../crypto/replay.ts"
import { deriveSessionKeys, type SessionKeys } from "../crypto/session.ts"
import { TokenBuckets } from "../limits/token-bucket.ts"
import { makeUdpEndpoint, type UdpDatagram, type UdpEndpoint } from "../net/udp-endpoint.ts"
import type { HostPort } from "../platform/host-port.ts"
import { fragmentFrame, Reassembler } from "../protocol/fragment.ts"
import { decodePacket, encodedPacketLength, encodePacket, type Packet, PacketFlag, Protocol, WellKnownPort } from "../protocol/packet.ts"
import {
  type AuthKeyExchangeFrame,
  classifyDatagram,
  decodeTunnelFrame,
  encodeEncryptedFrame,
  type EncryptedFrame,
  type FragmentFrame,
  type KeyExchangeFrame,
  MAX_UNFRAGMENTED_FRAME_BYTES
} from "../protocol/tunnel-frame.ts"
import { type BeaconLink, makeBeaconLink } from "./beacon-link.ts"
import type { Action, DecryptEpoch, DecryptFault, KeyExchangeInput, SessionId, TunnelEvent, Via } from "./key-exchange.ts"
import { makeKxAuthenticator } from "./kx-authenticator.ts"
import { makeOwnKeyExchange } from "./kx-frames.ts"
import { RegistryKeyCache } from "./peer-keys.ts"
import { DEFAULT_PEER_TABLE_LIMITS, PeerTable, type PeerTableLimits } from "./peer-table.ts"
import {
  directDecrypted,
  directSent,
  FRESH_PATH,
  pathVerdict,
  type PathState,
  PROBES_PER_ROUND,
  probed,
  relayChanged,
  SILENT_SENDS
} from "./path-monitor.ts"
import { makeSyncLog } from "./sync-log.ts"
import {
  makeTunnelCounters,
  type SendDropReason,
  type ShellSendDropReason,
  snapshotStats,
  type TunnelStats
} from "./tunnel-stats.ts"

// ---------------------------------------------------------------------------------------------------------
// Options and API

export interface TunnelLimits {
  /** Key-exchange frames per source IP: burst and refill per second (reference §4.1: 5/s). */
  readonly kxBurst: number
  readonly kxPerSecond: number
  /** Source IPs tracked by the KX rate limiter (reference: 4096). */
  readonly kxSourceIps: number
  /** Key-exchange frames waiting for the KX worker; past this they are dropped and counted. */
  readonly kxQueue: number
  /** Bound on one registry lookup (`registryKey`, `endpointOf`). */
  readonly lookupTimeout: Duration.Input
  /** Period of the tick fiber: retransmits, give-ups, reassembly expiry, keepalives. */
  readonly tickInterval: Duration.Input
  /** A peer with a session that we sent nothing for this long gets a NAT keepalive (reference: 25 s). */
  readonly keepaliveIntervalMs: number
  /** No application traffic either way for this long: the peer is idle and gets no keepalives (2 min). */
  readonly idleAfterMs: number
  readonly peerTable: PeerTableLimits
  /** UDP send queue in datagrams (udp-endpoint.ts). */
  readonly udpSendQueue: number
  /** How often we tell the beacon our endpoint (keeps the NAT mapping and the beacon's entry fresh). */
  readonly discoverIntervalMs: number
  /** Between a punch request and the direct frames that follow it: the beacon's commands travel first. */
  readonly punchLead: Duration.Input
  /** A first key exchange still unanswered this long after its direct send gets a copy through the relay. */
  readonly relayCopyAfter: Duration.Input
}

export const DEFAULT_TUNNEL_LIMITS: TunnelLimits = {
  kxBurst: 5,
  kxPerSecond: 5,
  kxSourceIps: 4096,
  kxQueue: 256,
  lookupTimeout: "5 seconds",
  tickInterval: "1 second",
  keepaliveIntervalMs: 25_000,
  idleAfterMs: 120_000,
  peerTable: DEFAULT_PEER_TABLE_LIMITS,
  udpSendQueue: 8192,
  discoverIntervalMs: 25_000,
  punchLead: "300 millis",
  relayCopyAfter: "1 second"
}

/** A core event with the peer it is about (the event bus comes later; `onEvent` is the in-process hook). */
export type TunnelEventOf = TunnelEvent & { readonly peerNodeId: number }

/**
 * The tunnel's UDP socket, bound before the tunnel exists. A daemon must be reachable before it registers
 * (DESIGN.md §4 rule 3), yet the tunnel needs the node ID that registration assigns: so the daemon binds
 * first, registers with the bound port, and builds the tunnel on this socket once the ID is known. Nothing is
 * read from the socket until the tunnel runs its reader loop; datagrams that arrive meanwhile wait in the
 * kernel buffer.
 */
export interface TunnelSocket {
  /** The bound address (the real port when bound to port 0). */
  readonly address: NetAddress.InetAddress
  /** Hands the socket to its one tunnel, which receives every datagram from then on. */
  readonly attach: (onDatagram: (datagram: UdpDatagram) => void) => UdpEndpoint
}

/** A socket bound by `bindTunnelSocket`, which can also be lent out before its tunnel exists. */
export interface BoundTunnelSocket extends TunnelSocket {
  /**
   * Runs the socket's reader and writer for the current scope with `onDatagram` receiving what arrives:
   * endpoint discovery from this very socket before registration (`endpoint-discovery.ts`). Datagrams that
   * arrive meanwhile and are not for the borrower are dropped (nobody can know our endpoint yet). Fails
   * if the tunnel already has the socket.
   */
  readonly borrow: (
    onDatagram: (datagram: UdpDatagram) => void
  ) => Effect.Effect<UdpEndpoint, never, Scope.Scope>
}

/** Binds a UDP socket for a tunnel built later, in the current scope (it closes with the scope). */
export const bindTunnelSocket = Effect.fnUntraced(function*(
  bind: HostPort,
  sendQueue: number = DEFAULT_TUNNEL_LIMITS.udpSendQueue
): Effect.fn.Return<BoundTunnelSocket, DatagramSocketError, Scope.Scope> {
  let deliver: ((datagram: UdpDatagram) => void) | undefined
  let attached = false
  const udp = yield* makeUdpEndpoint({ bind, sendQueue }, (datagram) => deliver?.(datagram))
  return {
    address: udp.address,
    attach: (onDatagram) => {
      if (attached) throw new Error("a tunnel socket serves one tunnel")
      attached = true
      deliver = onDatagram
      return udp
    },
    borrow: (onDatagram) =>
      Effect.gen(function*() {
        if (attached) return yield* Effect.die(new Error("the tunnel already has this socket"))
        deliver = onDatagram
        yield* Effect.addFinalizer(() => Effect.sync(() => {
          if (!attached) deliver = undefined
        }))
        // Forked after the finalizer: interrupted (and joined) before the borrower's handler is removed.
        yield* Effect.forkScoped(udp.reader.pipe(Effect.ignore))
        yield* Effect.forkScoped(udp.writer.pipe(Effect.ignore))
        return udp
      })
  }
})

export interface TunnelOptions<E1, E2> {
  readonly identity: Identity
  readonly nodeId: number
  /** Where to bind the socket, or a socket bound earlier (`bindTunnelSocket`). */
  readonly bind: HostPort | TunnelSocket
  /** The Ed25519 key the registry holds for a node (`undefined`: none). Failures count as "none". */
  readonly registryKey: (nodeId: number) => Effect.Effect<Uint8Array | undefined, E1>
  /** Where to dial a peer we have no learned endpoint for (the registry's `resolve`). */
  readonly endpointOf: (nodeId: number) => Effect.Effect<NetAddress.InetAddress | undefined, E2>
  /**
   * Receives every authenticated inner packet, synchronously on the socket's reader. Its payload is a view
   * of a buffer nobody else holds. Must not throw (a throw is a defect that ends the reader loop).
   */
  readonly onPacket: (packet: Packet, fromNode: number) => void
  /** In-process hook for `tunnel.established`, `tunnel.rekey_gave_up`, `security.src_spoofed`. Must not throw. */
  readonly onEvent?: (event: TunnelEventOf) => void
  /**
   * The beacon (reference §7): our endpoint is announced to it, punches are coordinated through it, and
   * relayed peers' frames go through it. Without one every frame goes direct.
   */
  readonly beacon?: NetAddress.InetAddress
  /** Whether the registry says a node accepts relayed traffic only (`relay_only`); asked after `endpointOf`. */
  readonly isRelayOnly?: (nodeId: number) => boolean
  /** The beacon's view of our endpoint (`host:port`), on every DiscoverReply. Must not throw. */
  readonly onPublicEndpoint?: (endpoint: string) => void
  /** A beacon Notify (kind 0x01: a relayed trust handshake waits at the registry). Must not throw. */
  readonly onBeaconNotify?: (kind: number) => void
  readonly limits?: Partial<TunnelLimits>
}

/**
 * `sent`: sealed and queued on the socket · `queued`: waiting for the peer's key (a key exchange is under
 * way) · anything else: dropped, for that reason (and counted).
 */
export type SendOutcome = "sent" | "queued" | SendDropReason

export interface Tunnel {
  /** The bound UDP address (the real port when bound to port 0). */
  readonly address: NetAddress.InetAddress
  readonly nodeId: number
  /** Sends one packet to `nodeId` through its tunnel. Never blocks, never fails: drops are outcomes. */
  readonly send: (nodeId: number, packet: Packet) => SendOutcome
  readonly stats: () => TunnelStats
  /**
   * `pilotctl prefer-direct`: unpin the peer, leave the relay, forget its cached address and dial it afresh
   * (resolve, punch, our key exchange). The session is kept, so traffic keeps flowing meanwhile.
   */
  readonly preferDirect: (nodeId: number) => PreferDirectResult
  /** Tells the beacon our endpoint again now (the receive watchdog's soft recovery); no-op without a beacon. */
  readonly rediscover: () => void
  /** Waits (at most `timeout`) until every queued datagram went out: a shutdown's last words. */
  readonly drain: (timeout: Duration.Input) => Effect.Effect<void>
  /** The essential loops, for the owner's supervisor; nothing is received or sent until they run. */
  readonly loops: {
    readonly "tunnel-udp-reader": Effect.Effect<never, DatagramSocketError>
    readonly "tunnel-udp-writer": Effect.Effect<never, DatagramSocketError>
    readonly "tunnel-tick": Effect.Effect<never>
    readonly "tunnel-kx": Effect.Effect<never>
  }
}

/** The IPC `PreferDirect` reply (reference §9). */
export interface PreferDirectResult {
  readonly node_id: number
  readonly had_tunnel: boolean
  readonly was_relay_active: boolean
  readonly was_relay_pinned: boolean
  readonly pila_pushed: boolean
}

// ---------------------------------------------------------------------------------------------------------
// Shell state per peer

interface ShellSession {
  readonly id: SessionId
  readonly keys: SessionKeys
  readonly replay: ReplayGuard
}

interface PeerLink {
  session: ShellSession | undefined
  /** Where frames for this peer go; `undefined` until learned or resolved. */
  address: NetAddress.InetAddress | undefined
  /** An `endpointOf` lookup is in flight. */
  resolving: boolean
  /** The path was reset (key exchange gave up): ask `endpointOf` again before the next key exchange. */
  pathReset: boolean
  /** Set by every send, cleared by the tick that notices it (keepalive timing without a clock read per packet). */
  sentSinceTick: boolean
  /** Application traffic (not keepalives) either way since the last tick. */
  trafficSinceTick: boolean
  lastSendMs: number
  lastTrafficMs: number
  /** Mirror of the core's relay flag (its `SetRelay` actions), read on every send. */
  relay: boolean
  path: PathState
}

interface KxJob {
  readonly frame: KeyExchangeFrame | AuthKeyExchangeFrame
  readonly via: Via
}

const endpointText = (address: NetAddress.InetAddress): string => NetAddress.formatInet(address)

const parseEndpoint = (endpoint: string | undefined): NetAddress.InetAddress | undefined => {
  if (endpoint === undefined) return undefined
  const parsed = NetAddress.inetAddressFromString(endpoint)
  return Result.isSuccess(parsed) ? parsed.success : undefined
}

const keepalivePacket = (from: number, to: number): Packet => ({
  flags: 0,
  protocol: Protocol.Control,
  src: { network: 0, node: from },
  dst: { network: 0, node: to },
  srcPort: 0,
  dstPort: WellKnownPort.Ping,
  seq: 0,
  ack: 0,
  window: 0,
  payload: new Uint8Array(0)
})

/** The payload of a path probe (reference §3.4): a Control ping the peer's tunnel answers at once. */
const PATH_PROBE = new TextEncoder().encode("pathprobe.v1")

const controlPacket = (from: number, to: number, flags: number, payload: Uint8Array): Packet => ({
  ...keepalivePacket(from, to),
  flags,
  payload
})

const isPathProbe = (packet: Packet): boolean =>
  packet.protocol === Protocol.Control &&
  packet.dstPort === WellKnownPort.Ping &&
  packet.payload.byteLength === PATH_PROBE.byteLength &&
  packet.payload.every((b, i) => b === PATH_PROBE[i])

const FRAGMENT_ID_SPACE = 0x1_0000_0000

// ---------------------------------------------------------------------------------------------------------

/**
 * Binds the tunnel's UDP socket in the current scope (unless given a bound one) and returns the tunnel.
 * Closing the scope closes a socket bound here; the owner runs `loops` (under its supervisor) in the same
 * scope, after this.
 */
export const makeTunnel = Effect.fnUntraced(function*<E1, E2>(
  options: TunnelOptions<E1, E2>
): Effect.fn.Return<Tunnel, DatagramSocketError, Scope.Scope> {
  const limits: TunnelLimits = { ...DEFAULT_TUNNEL_LIMITS, ...options.limits }
  const ownNode = options.nodeId
  const clock = yield* Clock.Clock
  const nowMs = (): number => Number(clock.monotonicTimeNanosUnsafe()) / 1e6

  const counters = makeTunnelCounters()
  const drops = counters.drops
  const table = new PeerTable(limits.peerTable)
  const keyCache = new RegistryKeyCache()
  const reassembler = new Reassembler()
  const kxBuckets = new TokenBuckets<string>({
    burst: limits.kxBurst,
    perSecond: limits.kxPerSecond,
    maxKeys: limits.kxSourceIps
  })
  const links = new Map<number, PeerLink>()
  const own = makeOwnKeyExchange(options.identity, ownNode)
  let nextFragmentId = randomInt(FRAGMENT_ID_SPACE)

  const socket = "attach" in options.bind ? options.bind : yield* bindTunnelSocket(options.bind, limits.udpSendQueue)
  const udp = socket.attach((datagram) => onDatagram(datagram))
  const beacon: BeaconLink | undefined = options.beacon === undefined ? undefined : makeBeaconLink(udp, options.beacon)
  let publicEndpoint: string | undefined
  // Announce ourselves at once (queued until the writer runs): a peer's punch request for us fails until
  // the beacon knows our endpoint, and would cost that peer a key-exchange retransmit on the relay.
  beacon?.discover(ownNode)
  let lastDiscoverMs = beacon === undefined ? Number.NEGATIVE_INFINITY : nowMs()
  // After the socket, so its fibers (dials, log lines) are interrupted before the socket closes.
  const background = yield* FiberSet.make<void, never>()
  const runBackground = yield* FiberSet.runtime(background)<never>()
  const log = yield* makeSyncLog(background)
  const kxQueue = yield* Queue.dropping<KxJob>(limits.kxQueue)
  const authenticate = makeKxAuthenticator({
    ownNodeId: ownNode,
    cache: keyCache,
    registryKey: options.registryKey,
    lookupTimeout: limits.lookupTimeout,
    counters,
    nowMs
  })

  // --- per-peer shell state --------------------------------------------------------------------------

  const linkOf = (nodeId: number): PeerLink => {
    let link = links.get(nodeId)
    if (link === undefined) {
      const now = nowMs()
      link = {
        session: undefined,
        address: undefined,
        resolving: false,
        pathReset: false,
        sentSinceTick: false,
        trafficSinceTick: true,
        lastSendMs: now,
        lastTrafficMs: now,
        relay: false,
        path: FRESH_PATH
      }
      links.set(nodeId, link)
    }
    return link
  }

  /** The address to send to: resolved or learned, else the endpoint the core has learned. */
  const addressOf = (nodeId: number, link: PeerLink): NetAddress.InetAddress | undefined => {
    link.address ??= parseEndpoint(table.get(nodeId)?.endpoint)
    return link.address
  }

  // --- sending ---------------------------------------------------------------------------------------

  /**
   * Hands one frame to `sendDatagram`, as PILF fragments if it is too long (a relayed fragment still fits
   * 1232 bytes with the 9-byte relay header); false if any part was refused.
   */
  const inDatagrams = (frame: Uint8Array, sendDatagram: (bytes: Uint8Array) => boolean): boolean => {
    if (frame.byteLength <= MAX_UNFRAGMENTED_FRAME_BYTES) return sendDatagram(frame)
    const fragments = fragmentFrame(frame, ownNode, nextFragmentId)
    nextFragmentId = (nextFragmentId + 1) % FRAGMENT_ID_SPACE
    // Our longest frame is a PILS around a 65 535-byte payload (65 605 bytes), well within PILF's 77 376.
    if (Result.isFailure(fragments)) throw new RangeError(`tunnel frame of ${frame.byteLength} bytes cannot be fragmented`)
    let accepted = true
    for (const fragment of fragments.success) accepted = sendDatagram(fragment) && accepted
    counters.fragments_sent += fragments.success.length
    return accepted
  }

  const transmit = (frame: Uint8Array, to: NetAddress.InetAddress): boolean => inDatagrams(frame, (bytes) => udp.send(bytes, to))

  /** Whether the peer's frames go through the beacon. */
  const relayed = (link: PeerLink): boolean => link.relay && beacon !== undefined

  /** Sends a frame on the peer's current path; false when there is none or the queue refused it. */
  const sendFrame = (nodeId: number, link: PeerLink, frame: Uint8Array): boolean => {
    if (beacon !== undefined && link.relay) return inDatagrams(frame, (bytes) => beacon.relay(ownNode, nodeId, bytes))
    const to = link.address
    if (to === undefined) return false
    // Only the first few unanswered sends matter to the silent-path rule: no clock read per packet after.
    if (link.path.unansweredSends < SILENT_SENDS) link.path = directSent(link.path, nowMs())
    return transmit(frame, to)
  }

  const dropped = (reason: ShellSendDropReason): SendOutcome => {
    drops.send[reason]++
    return reason
  }

  const sealFrame = (session: ShellSession, packet: Uint8Array): Uint8Array => {
    const { nonce, sealed } = session.keys.seal(packet, ownNode)
    return encodeEncryptedFrame({ sender: ownNode, nonce, sealed })
  }

  const seal = (nodeId: number, link: PeerLink, session: ShellSession, packet: Uint8Array): SendOutcome => {
    if (!sendFrame(nodeId, link, sealFrame(session, packet))) return dropped("send_queue_full")
    counters.pkts_sent++
    counters.bytes_sent += packet.byteLength
    link.sentSinceTick = true
    return "sent"
  }

  /** Seals and sends packets the core released (pending flush, or a send that raced an install). */
  const sendPackets = (nodeId: number, packets: ReadonlyArray<Uint8Array>): SendOutcome => {
    const link = linkOf(nodeId)
    const session = link.session
    const reachable = relayed(link) || addressOf(nodeId, link) !== undefined
    let outcome: SendOutcome = "sent"
    for (const packet of packets) {
      if (session === undefined || !reachable) outcome = dropped("no_endpoint")
      else {
        link.trafficSinceTick = true
        outcome = seal(nodeId, link, session, packet)
      }
    }
    return outcome
  }

  const sendOwnKeyExchange = (send: (frame: Uint8Array) => boolean, keyRequest: boolean): void => {
    send(own.pila)
    counters.kx_sent++
    if (keyRequest) {
      send(own.pilk)
      counters.kx_sent++
    }
  }

  const directKeyExchange = (to: NetAddress.InetAddress, keyRequest: boolean): void =>
    sendOwnKeyExchange((frame) => transmit(frame, to), keyRequest)

  const relayKeyExchange = (relay: BeaconLink, nodeId: number, keyRequest: boolean): void =>
    sendOwnKeyExchange((frame) => relay.relay(ownNode, nodeId, frame), keyRequest)

  /** Asks `endpointOf` where a node is (bounded, counted); a failure or timeout is logged at Debug: no answer. */
  const lookUpEndpoint = (nodeId: number): Effect.Effect<NetAddress.InetAddress | undefined> =>
    Effect.suspend(() => {
      counters.endpoint_lookups++
      return options.endpointOf(nodeId).pipe(
        Effect.timeout(limits.lookupTimeout),
        Effect.catch((error) =>
          Effect.logDebug("endpoint lookup failed", error).pipe(Effect.as(undefined), Effect.annotateLogs("peer_node", nodeId))
        )
      )
    })

  /**
   * Resolves a peer's address through `endpointOf` (bounded), asks the beacon to punch both NATs, then —
   * after `punchLead`, so the punches have opened the peer's NAT — sends our key exchange there, and a copy
   * through the relay if it is still unanswered `relayCopyAfter` later. A peer the registry calls relay-only
   * is pinned to the relay instead, and one without any address goes through it at once.
   */
  const dial = (nodeId: number, keyRequest: boolean): Effect.Effect<void> =>
    lookUpEndpoint(nodeId).pipe(
      Effect.flatMap((resolved) => {
        const link = links.get(nodeId)
        if (link === undefined) return Effect.void // forgotten meanwhile: nothing is waiting for this address any more
        link.resolving = false
        link.pathReset = false
        const throughRelay = (relay: BeaconLink): Effect.Effect<void> => {
          step(nodeId, { _tag: "DirectPathSilent" })
          relayKeyExchange(relay, nodeId, keyRequest)
          return Effect.void
        }
        if (beacon !== undefined && options.isRelayOnly?.(nodeId) === true) {
          link.path = { ...link.path, pinned: true }
          return throughRelay(beacon)
        }
        const to = resolved ?? addressOf(nodeId, link)
        if (to === undefined) {
          counters.endpoint_lookup_failures++
          // No address to punch (a private peer that does not trust us yet resolves to nothing): the relay
          // is the only way to reach it now, rather than after an unanswered retransmit.
          return beacon === undefined ? Effect.void : throughRelay(beacon)
        }
        link.address = to
        if (beacon === undefined) return Effect.sync(() => directKeyExchange(to, keyRequest))
        beacon.punchRequest(ownNode, nodeId)
        return Effect.sleep(limits.punchLead).pipe(
          Effect.andThen(Effect.sync(() => directKeyExchange(to, keyRequest))),
          Effect.andThen(Effect.sleep(limits.relayCopyAfter)),
          Effect.andThen(Effect.sync(() => {
            // Still no session: the NATs may not be punchable. A relay copy lets the peer answer through the
            // beacon now rather than after the 4 s retransmit; a punched path was answered long before this.
            const current = links.get(nodeId)
            if (current !== undefined && current.session === undefined) relayKeyExchange(beacon, nodeId, keyRequest)
          }))
        )
      })
    )

  const sendKeyExchange = (nodeId: number, keyRequest: boolean, path: "direct" | "relay", replyTo: string | undefined): void => {
    const answerTo = parseEndpoint(replyTo)
    if (answerTo !== undefined) return directKeyExchange(answerTo, keyRequest)
    const link = linkOf(nodeId)
    if (path === "relay" && beacon !== undefined) return relayKeyExchange(beacon, nodeId, keyRequest)
    const to = link.pathReset ? undefined : addressOf(nodeId, link)
    if (to !== undefined) return directKeyExchange(to, keyRequest)
    if (link.resolving) return
    link.resolving = true
    runBackground(dial(nodeId, keyRequest))
  }

  // --- performing the core's actions -----------------------------------------------------------------

  /** Derives and installs a session; false when the peer's key is unusable. */
  const installSession = (nodeId: number, id: SessionId, peerX25519: Uint8Array): boolean => {
    const keys = deriveSessionKeys(own.keyPair.privateKey, peerX25519)
    if (Result.isFailure(keys)) return false
    linkOf(nodeId).session = { id, keys: keys.success, replay: new ReplayGuard() }
    counters.sessions_installed++
    return true
  }

  const dropSession = (nodeId: number, id: SessionId): void => {
    const link = links.get(nodeId)
    if (link?.session?.id !== id) return
    link.session = undefined
    counters.sessions_dropped++
  }

  const emit = (nodeId: number, event: TunnelEvent): void => {
    if (event.name === "security.src_spoofed") drops.spoofed_source++
    options.onEvent?.({ ...event, peerNodeId: nodeId })
  }

  const deliver = (nodeId: number, packet: Packet): void => {
    counters.pkts_recv++
    counters.bytes_recv += encodedPacketLength(packet)
    if (isPathProbe(packet)) return // answered by `onEncrypted`; not traffic of the layer above
    const link = links.get(nodeId)
    if (link !== undefined) link.trafficSinceTick = true
    options.onPacket(packet, nodeId)
  }

  /**
   * Performs `actions` for `nodeId`, in order. Returns the outcome for an outbound packet when the actions
   * decided one (`DropPacket`, or `SendPackets` for a send that raced an install).
   */
  const perform = (nodeId: number, actions: ReadonlyArray<Action>, packet?: Packet): SendOutcome | undefined => {
    let outcome: SendOutcome | undefined
    for (const action of actions) {
      switch (action._tag) {
        case "InstallSession":
          if (!installSession(nodeId, action.session, action.peerX25519)) {
            // The rest of this batch assumed the install: abort it and let the core undo the session.
            perform(nodeId, table.step(nodeId, { _tag: "InstallFailed", session: action.session }, nowMs()))
            return outcome
          }
          break
        case "DropSession":
          dropSession(nodeId, action.session)
          break
        case "SendKeyExchange":
          sendKeyExchange(nodeId, action.keyRequest, action.path, action.replyTo)
          break
        case "SendPackets":
          outcome = sendPackets(nodeId, action.packets)
          break
        case "DropPacket":
          outcome = action.reason
          break
        case "Deliver":
          if (packet !== undefined) deliver(nodeId, packet)
          break
        case "LearnEndpoint": {
          const address = parseEndpoint(action.endpoint)
          if (address !== undefined) linkOf(nodeId).address = address
          break
        }
        case "ResetPath": {
          const link = links.get(nodeId)
          if (link !== undefined) {
            link.address = undefined
            link.pathReset = true
          }
          break
        }
        case "SetRelay": {
          const link = linkOf(nodeId)
          link.relay = action.relay
          link.path = relayChanged(link.path)
          // Logged on real flips only (the core reports no others), so a flapping peer costs a line per flip.
          if (beacon !== undefined) log("Info", action.relay ? "peer path: relay" : "peer path: direct", nodeId)
          break
        }
        case "Emit":
          emit(nodeId, action.event)
          break
        case "Log":
          log(action.level, action.message, nodeId)
          break
        case "PostInstallHook": // endpoint refresh and the salvage ring belong to the path layer (not built yet)
        case "RejectTableFull": // counted by the table
        case "DropPending": // counted by the table
          break
      }
    }
    if (table.get(nodeId) === undefined) links.delete(nodeId)
    return outcome
  }

  const step = (nodeId: number, input: KeyExchangeInput, packet?: Packet): SendOutcome | undefined =>
    perform(nodeId, table.step(nodeId, input, nowMs()), packet)

  // --- receiving -------------------------------------------------------------------------------------

  /**
   * How a frame reached us: `via` for the core; `from` the datagram's source (the beacon for relayed ones);
   * `key` the source that rate limits and reassembly are kept per — the endpoint, or for relayed frames the
   * beacon's claimed sender (untrusted, but only a bucket's name: identity still comes from the frame).
   */
  interface Arrival {
    readonly via: Via
    readonly from: NetAddress.InetAddress
    readonly key: string
  }

  const directArrival = (from: NetAddress.InetAddress): Arrival => {
    const endpoint = endpointText(from)
    return { via: { _tag: "Direct", endpoint }, from, key: endpoint }
  }

  const RELAYED: Via = { _tag: "Relay" }

  const rejected = (nodeId: number, session: ShellSession, via: Via, fault: DecryptFault): void => {
    step(nodeId, { _tag: "DecryptRejected", session: session.id, via, fault })
  }

  /** Path bookkeeping for an authenticated direct receive: it answers our sends and may end the relay. */
  const provenDirect = (nodeId: number): void => {
    const link = links.get(nodeId)
    if (link === undefined || (!link.relay && link.path.unansweredSends === 0)) return
    const { path, restore } = directDecrypted(link.path, link.relay)
    link.path = path
    if (restore) step(nodeId, { _tag: "DirectPathRestored" })
  }

  /** Answers a peer's path probe straight to where it came from, whatever path the peer is on. */
  const answerProbe = (nodeId: number, probe: Packet, to: NetAddress.InetAddress): void => {
    const session = links.get(nodeId)?.session
    if (session === undefined || probe.src.node !== nodeId || (probe.flags & PacketFlag.ACK) !== 0) return
    const pong = encodePacket(controlPacket(ownNode, nodeId, PacketFlag.ACK, probe.payload))
    if (transmit(sealFrame(session, pong), to)) counters.path_probes_answered++
  }

  const onEncrypted = (frame: EncryptedFrame, arrival: Arrival): void => {
    const sender = frame.sender
    const via = arrival.via
    const session = links.get(sender)?.session
    if (session === undefined) {
      drops.no_session++
      step(sender, { _tag: "NoSession", via })
      return
    }
    const opened = session.keys.open(frame.nonce, frame.sealed, sender)
    if (Result.isFailure(opened)) {
      counters.tunnel_encryption_failure++
      return rejected(sender, session, via, "auth_failed")
    }
    counters.tunnel_encryption_success++
    const replay = session.replay
    const epochsBefore = replay.counts.new_epoch
    const nonce = opened.success.nonce
    const verdict = replay.admit(nonce)
    switch (verdict) {
      case "accepted":
        break
      case "replay":
      case "outside_window":
        drops[verdict]++
        return rejected(sender, session, via, verdict)
      case "stale_epoch":
        drops.stale_epoch++
        if (replay.exhausted) rejected(sender, session, via, "epochs_exhausted")
        return
    }
    const packet = decodePacket(opened.success.plaintext)
    if (Result.isFailure(packet)) {
      drops.inner_malformed++
      return
    }
    const epoch: DecryptEpoch = replay.counts.new_epoch !== epochsBefore
      ? "new"
      : nonce.epoch === replay.newestEpoch
      ? "newest"
      : "older"
    const inner = packet.success
    if (via._tag === "Direct") provenDirect(sender)
    step(sender, { _tag: "Decrypted", session: session.id, via, epoch, packet: inner }, inner)
    if (via._tag === "Direct" && isPathProbe(inner)) answerProbe(sender, inner, arrival.from)
  }

  const onKeyExchange = (frame: KeyExchangeFrame | AuthKeyExchangeFrame, arrival: Arrival): void => {
    // The rate limit comes before any crypto, lookup or queueing: a flood costs one bucket per source IP
    // (per claimed sender for relayed frames, which all come from the beacon's IP).
    const bucket = arrival.via._tag === "Direct" ? NetAddress.formatHost(arrival.from) : arrival.key
    if (!kxBuckets.take(bucket, nowMs())) {
      drops.kx_rate_limited++
      return
    }
    if (!Queue.offerUnsafe(kxQueue, { frame, via: arrival.via })) drops.kx_queue_full++
  }

  const onFragment = (fragment: FragmentFrame, arrival: Arrival): void => {
    const outcome = reassembler.accept({ source: arrival.key, fragment }, nowMs())
    switch (outcome._tag) {
      case "Complete":
        counters.frames_reassembled++
        return demultiplex(outcome.frame, arrival, false)
      case "Rejected": // counted by the reassembler
      case "Pending":
        return
    }
  }

  const onBeaconMessage = (bytes: Uint8Array, from: NetAddress.InetAddress): void => {
    const input = beacon?.accept(bytes, from)
    if (input === undefined) {
      drops.beacon++
      return
    }
    switch (input._tag) {
      case "RelayDeliver":
        return demultiplex(input.frame, { via: RELAYED, from, key: `relay:${input.sender}` }, true)
      case "DiscoverReply":
        if (input.endpoint !== publicEndpoint) {
          publicEndpoint = input.endpoint
          log("Info", `beacon sees us at ${input.endpoint}`, ownNode)
        }
        options.onPublicEndpoint?.(input.endpoint)
        return
      case "Notify":
        options.onBeaconNotify?.(input.kind)
        return
      case "Handled":
        return
    }
  }

  const demultiplex = (bytes: Uint8Array, arrival: Arrival, fragmentsAllowed: boolean): void => {
    switch (classifyDatagram(bytes)) {
      case "Unknown":
        drops.unknown_magic++
        return
      case "Beacon":
        // A beacon message inside a relayed frame is nonsense: never unwrap twice.
        if (arrival.via._tag === "Relay") drops.malformed++
        else onBeaconMessage(bytes, arrival.from)
        return
      case "Plain":
        drops.plaintext++
        return
      case "Punch":
        drops.punch++
        return
      default:
        break
    }
    const decoded = decodeTunnelFrame(bytes)
    if (Result.isFailure(decoded)) {
      drops.malformed++
      return
    }
    const frame = decoded.success
    switch (frame._tag) {
      case "Encrypted":
        return onEncrypted(frame, arrival)
      case "KeyExchange":
      case "AuthKeyExchange":
        return onKeyExchange(frame, arrival)
      case "Fragment":
        if (fragmentsAllowed) return onFragment(frame, arrival)
        drops.malformed++
        return
      case "Plain":
      case "Punch":
        return // classified above
    }
  }

  const onDatagram = (datagram: UdpDatagram): void => {
    counters.last_recv_ms = nowMs()
    demultiplex(datagram.payload, directArrival(datagram.from), true)
  }

  // --- the KX worker and the tick --------------------------------------------------------------------

  const kxWorker: Effect.Effect<never> = Effect.forever(
    Effect.flatMap(Queue.take(kxQueue), (job) =>
      Effect.map(authenticate(job.frame, job.via), (input) => {
        if (input !== undefined) step(job.frame.node, input)
      }))
  )

  const sendKeepalives = (now: number): void => {
    for (const [nodeId, link] of links) {
      if (link.sentSinceTick) link.lastSendMs = now
      if (link.trafficSinceTick) link.lastTrafficMs = now
      link.sentSinceTick = false
      link.trafficSinceTick = false
      const session = link.session
      if (session === undefined || (link.address === undefined && !relayed(link))) continue
      if (now - link.lastSendMs < limits.keepaliveIntervalMs || now - link.lastTrafficMs >= limits.idleAfterMs) continue
      if (seal(nodeId, link, session, encodePacket(keepalivePacket(ownNode, nodeId))) === "sent") counters.keepalives_sent++
      link.sentSinceTick = false
      link.lastSendMs = now
    }
  }

  /**
   * One probe round for a relayed peer: a punch request (the beacon tells both NATs to open), then, after
   * `punchLead`, `PROBES_PER_ROUND` path probes sent directly. Their pongs come back directly if the path
   * works, and `provenDirect` moves the peer off the relay.
   */
  const probeRound = (relay: BeaconLink, nodeId: number): Effect.Effect<void> =>
    Effect.sync(() => relay.punchRequest(ownNode, nodeId)).pipe(
      Effect.andThen(Effect.sleep(limits.punchLead)),
      Effect.andThen(Effect.sync(() => {
        const link = links.get(nodeId)
        const session = link?.session
        const to = link?.address
        if (session === undefined || to === undefined) return
        const probe = encodePacket(controlPacket(ownNode, nodeId, 0, PATH_PROBE))
        for (let i = 0; i < PROBES_PER_ROUND; i++) if (transmit(sealFrame(session, probe), to)) counters.path_probes_sent++
      }))
    )

  /** Asks `endpointOf` for the peer's current address (bounded) and uses it for direct frames from now on. */
  const refreshAddress = (nodeId: number): Effect.Effect<void> =>
    lookUpEndpoint(nodeId).pipe(
      Effect.map((resolved) => {
        const link = links.get(nodeId)
        if (link !== undefined && resolved !== undefined) link.address = resolved
      })
    )

  /**
   * A peer silent on its direct path — it may have restarted elsewhere (a new port: the session we hold is
   * dead and nothing from it will ever arrive), or the path broke. With a beacon it goes to the relay (where a
   * restarted peer answers our traffic with a key request) and its address is looked up again for the probes;
   * without one, we look it up again and send it our key exchange there.
   */
  const onSilentPath = (nodeId: number, link: PeerLink): void => {
    if (beacon !== undefined) {
      step(nodeId, { _tag: "DirectPathSilent" })
      runBackground(refreshAddress(nodeId))
      return
    }
    link.path = relayChanged(link.path)
    link.pathReset = true
    log("Info", "peer silent on its direct path: resolving it again", nodeId)
    sendKeyExchange(nodeId, true, "direct", undefined)
  }

  /** The path layer's tick: announce ourselves to the beacon, act on silent peers, probe relayed ones. */
  const watchPaths = (now: number): void => {
    if (beacon !== undefined && now - lastDiscoverMs >= limits.discoverIntervalMs) {
      lastDiscoverMs = now
      beacon.discover(ownNode)
    }
    for (const [nodeId, link] of links) {
      const verdict = pathVerdict(
        link.path,
        { relayed: relayed(link), hasDirectAddress: link.session !== undefined && link.address !== undefined },
        now
      )
      if (verdict === "go_relay") onSilentPath(nodeId, link)
      else if (verdict === "probe" && beacon !== undefined) {
        link.path = probed(link.path, now)
        runBackground(probeRound(beacon, nodeId))
      }
    }
  }

  const tick = (): void => {
    const now = nowMs()
    for (const { actions, nodeId } of table.tick(now)) perform(nodeId, actions)
    // The table forgets peers left with nothing without telling anyone: follow it.
    for (const nodeId of links.keys()) if (table.get(nodeId) === undefined) links.delete(nodeId)
    watchPaths(now)
    sendKeepalives(now)
    reassembler.sweep(now)
    kxBuckets.prune(now)
  }

  const tickLoop: Effect.Effect<never> = Effect.forever(Effect.andThen(Effect.sleep(limits.tickInterval), Effect.sync(tick)))

  // --- the API ---------------------------------------------------------------------------------------

  const send = (nodeId: number, packet: Packet): SendOutcome => {
    if (nodeId === ownNode) return dropped("own_node")
    const bytes = encodePacket(packet)
    const link = links.get(nodeId)
    if (link !== undefined) {
      link.trafficSinceTick = true
      if (link.session !== undefined && (link.address !== undefined || relayed(link))) return seal(nodeId, link, link.session, bytes)
    }
    return step(nodeId, { _tag: "OutboundPacket", packet: bytes }) ?? "queued"
  }

  const preferDirect = (nodeId: number): PreferDirectResult => {
    const link = links.get(nodeId)
    const before: PreferDirectResult = {
      node_id: nodeId,
      had_tunnel: link?.session !== undefined,
      was_relay_active: link?.relay ?? false,
      was_relay_pinned: link?.path.pinned ?? false,
      pila_pushed: false
    }
    if (nodeId === ownNode) return before
    const target = linkOf(nodeId)
    target.path = FRESH_PATH
    if (target.relay) step(nodeId, { _tag: "DirectPathRestored" })
    // Keep the address for traffic meanwhile, but resolve afresh before the key exchange goes out.
    target.pathReset = true
    sendKeyExchange(nodeId, false, "direct", undefined)
    return { ...before, pila_pushed: true }
  }

  const stats = (): TunnelStats =>
    snapshotStats({
      counters,
      table,
      reassemblyDrops: reassembler.drops,
      udp: udp.stats(),
      beacon: beacon === undefined ? undefined : { addr: beacon.text, counters: beacon.counters, publicEndpoint },
      sendAddressOf: (nodeId) => {
        const address = links.get(nodeId)?.address
        return address === undefined ? undefined : endpointText(address)
      }
    })

  return {
    address: udp.address,
    nodeId: ownNode,
    send,
    stats,
    preferDirect,
    rediscover: () => beacon?.discover(ownNode),
    drain: udp.drain,
    loops: {
      "tunnel-udp-reader": udp.reader,
      "tunnel-udp-writer": udp.writer,
      "tunnel-tick": tickLoop,
      "tunnel-kx": kxWorker
    }
  }
})

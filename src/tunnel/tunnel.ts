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
import { decodePacket, encodedPacketLength, encodePacket, type Packet, Protocol, WellKnownPort } from "../protocol/packet.ts"
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
import type { Action, DecryptEpoch, DecryptFault, KeyExchangeInput, SessionId, TunnelEvent, Via } from "./key-exchange.ts"
import { makeKxAuthenticator } from "./kx-authenticator.ts"
import { makeOwnKeyExchange } from "./kx-frames.ts"
import { RegistryKeyCache } from "./peer-keys.ts"
import { DEFAULT_PEER_TABLE_LIMITS, PeerTable, type PeerTableLimits } from "./peer-table.ts"
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
  udpSendQueue: 8192
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

/** Binds a UDP socket for a tunnel built later, in the current scope (it closes with the scope). */
export const bindTunnelSocket = Effect.fnUntraced(function*(
  bind: HostPort,
  sendQueue: number = DEFAULT_TUNNEL_LIMITS.udpSendQueue
): Effect.fn.Return<TunnelSocket, DatagramSocketError, Scope.Scope> {
  let deliver: ((datagram: UdpDatagram) => void) | undefined
  const udp = yield* makeUdpEndpoint({ bind, sendQueue }, (datagram) => deliver?.(datagram))
  return {
    address: udp.address,
    attach: (onDatagram) => {
      if (deliver !== undefined) throw new Error("a tunnel socket serves one tunnel")
      deliver = onDatagram
      return udp
    }
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
        lastTrafficMs: now
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

  /** Hands one frame to the socket, as PILF fragments if it is too long; false if any part was refused. */
  const transmit = (frame: Uint8Array, to: NetAddress.InetAddress): boolean => {
    if (frame.byteLength <= MAX_UNFRAGMENTED_FRAME_BYTES) return udp.send(frame, to)
    const fragments = fragmentFrame(frame, ownNode, nextFragmentId)
    nextFragmentId = (nextFragmentId + 1) % FRAGMENT_ID_SPACE
    // Our longest frame is a PILS around a 65 535-byte payload (65 605 bytes), well within PILF's 77 376.
    if (Result.isFailure(fragments)) throw new RangeError(`tunnel frame of ${frame.byteLength} bytes cannot be fragmented`)
    let accepted = true
    for (const fragment of fragments.success) accepted = udp.send(fragment, to) && accepted
    counters.fragments_sent += fragments.success.length
    return accepted
  }

  const dropped = (reason: ShellSendDropReason): SendOutcome => {
    drops.send[reason]++
    return reason
  }

  const seal = (link: PeerLink, session: ShellSession, packet: Uint8Array, to: NetAddress.InetAddress): SendOutcome => {
    const { nonce, sealed } = session.keys.seal(packet, ownNode)
    if (!transmit(encodeEncryptedFrame({ sender: ownNode, nonce, sealed }), to)) return dropped("send_queue_full")
    counters.pkts_sent++
    counters.bytes_sent += packet.byteLength
    link.sentSinceTick = true
    return "sent"
  }

  /** Seals and sends packets the core released (pending flush, or a send that raced an install). */
  const sendPackets = (nodeId: number, packets: ReadonlyArray<Uint8Array>): SendOutcome => {
    const link = linkOf(nodeId)
    const session = link.session
    const to = addressOf(nodeId, link)
    let outcome: SendOutcome = "sent"
    for (const packet of packets) {
      if (session === undefined || to === undefined) outcome = dropped("no_endpoint")
      else {
        link.trafficSinceTick = true
        outcome = seal(link, session, packet, to)
      }
    }
    return outcome
  }

  const sendOwnKeyExchange = (to: NetAddress.InetAddress, keyRequest: boolean): void => {
    transmit(own.pila, to)
    counters.kx_sent++
    if (keyRequest) {
      transmit(own.pilk, to)
      counters.kx_sent++
    }
  }

  /** Resolves a peer's address through `endpointOf` (bounded), then sends our key exchange there. */
  const dial = (nodeId: number, keyRequest: boolean): Effect.Effect<void> => {
    counters.endpoint_lookups++
    return options.endpointOf(nodeId).pipe(
      Effect.timeout(limits.lookupTimeout),
      Effect.catch((error) =>
        Effect.logDebug("endpoint lookup failed", error).pipe(Effect.as(undefined), Effect.annotateLogs("peer_node", nodeId))
      ),
      Effect.map((resolved) => {
        const link = links.get(nodeId)
        if (link === undefined) return // forgotten meanwhile: nothing is waiting for this address any more
        link.resolving = false
        link.pathReset = false
        const to = resolved ?? addressOf(nodeId, link)
        if (to === undefined) {
          counters.endpoint_lookup_failures++
          return
        }
        link.address = to
        sendOwnKeyExchange(to, keyRequest)
      })
    )
  }

  const sendKeyExchange = (nodeId: number, keyRequest: boolean, replyTo: string | undefined): void => {
    const answerTo = parseEndpoint(replyTo)
    if (answerTo !== undefined) return sendOwnKeyExchange(answerTo, keyRequest)
    const link = linkOf(nodeId)
    const to = link.pathReset ? undefined : addressOf(nodeId, link)
    if (to !== undefined) return sendOwnKeyExchange(to, keyRequest)
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
          sendKeyExchange(nodeId, action.keyRequest, action.replyTo)
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
        case "SetRelay":
          log("Debug", `relay ${action.relay ? "on" : "off"} (no beacon yet: key exchanges still go direct)`, nodeId)
          break
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

  const direct = (from: NetAddress.InetAddress): Via => ({ _tag: "Direct", endpoint: endpointText(from) })

  const rejected = (nodeId: number, session: ShellSession, from: NetAddress.InetAddress, fault: DecryptFault): void => {
    step(nodeId, { _tag: "DecryptRejected", session: session.id, via: direct(from), fault })
  }

  const onEncrypted = (frame: EncryptedFrame, from: NetAddress.InetAddress): void => {
    const sender = frame.sender
    const session = links.get(sender)?.session
    if (session === undefined) {
      drops.no_session++
      step(sender, { _tag: "NoSession", via: direct(from) })
      return
    }
    const opened = session.keys.open(frame.nonce, frame.sealed, sender)
    if (Result.isFailure(opened)) {
      counters.tunnel_encryption_failure++
      return rejected(sender, session, from, "auth_failed")
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
        return rejected(sender, session, from, verdict)
      case "stale_epoch":
        drops.stale_epoch++
        if (replay.exhausted) rejected(sender, session, from, "epochs_exhausted")
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
    step(sender, { _tag: "Decrypted", session: session.id, via: direct(from), epoch, packet: packet.success }, packet.success)
  }

  const onKeyExchange = (frame: KeyExchangeFrame | AuthKeyExchangeFrame, from: NetAddress.InetAddress): void => {
    // The rate limit comes before any crypto, lookup or queueing: a flood costs one bucket per source IP.
    if (!kxBuckets.take(NetAddress.formatHost(from), nowMs())) {
      drops.kx_rate_limited++
      return
    }
    if (!Queue.offerUnsafe(kxQueue, { frame, via: direct(from) })) drops.kx_queue_full++
  }

  const onFragment = (fragment: FragmentFrame, from: NetAddress.InetAddress): void => {
    const outcome = reassembler.accept({ source: endpointText(from), fragment }, nowMs())
    switch (outcome._tag) {
      case "Complete":
        counters.frames_reassembled++
        return demultiplex(outcome.frame, from, false)
      case "Rejected": // counted by the reassembler
      case "Pending":
        return
    }
  }

  const demultiplex = (bytes: Uint8Array, from: NetAddress.InetAddress, fragmentsAllowed: boolean): void => {
    switch (classifyDatagram(bytes)) {
      case "Unknown":
        drops.unknown_magic++
        return
      case "Beacon":
        drops.beacon++
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
        return onEncrypted(frame, from)
      case "KeyExchange":
      case "AuthKeyExchange":
        return onKeyExchange(frame, from)
      case "Fragment":
        if (fragmentsAllowed) return onFragment(frame, from)
        drops.malformed++
        return
      case "Plain":
      case "Punch":
        return // classified above
    }
  }

  const onDatagram = (datagram: UdpDatagram): void => {
    counters.last_recv_ms = nowMs()
    demultiplex(datagram.payload, datagram.from, true)
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
      const to = link.address
      if (session === undefined || to === undefined) continue
      if (now - link.lastSendMs < limits.keepaliveIntervalMs || now - link.lastTrafficMs >= limits.idleAfterMs) continue
      if (seal(link, session, encodePacket(keepalivePacket(ownNode, nodeId)), to) === "sent") counters.keepalives_sent++
      link.sentSinceTick = false
      link.lastSendMs = now
    }
  }

  const tick = (): void => {
    const now = nowMs()
    for (const { actions, nodeId } of table.tick(now)) perform(nodeId, actions)
    // The table forgets peers left with nothing without telling anyone: follow it.
    for (const nodeId of links.keys()) if (table.get(nodeId) === undefined) links.delete(nodeId)
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
      if (link.session !== undefined && link.address !== undefined) return seal(link, link.session, bytes, link.address)
    }
    return step(nodeId, { _tag: "OutboundPacket", packet: bytes }) ?? "queued"
  }

  const stats = (): TunnelStats =>
    snapshotStats({
      counters,
      table,
      reassemblyDrops: reassembler.drops,
      udp: udp.stats(),
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
    drain: udp.drain,
    loops: {
      "tunnel-udp-reader": udp.reader,
      "tunnel-udp-writer": udp.writer,
      "tunnel-tick": tickLoop,
      "tunnel-kx": kxWorker
    }
  }
})

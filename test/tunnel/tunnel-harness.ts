/**
 * Real-socket harness for the tunnel tests: a directory standing in for the registry (keys and endpoints
 * from maps), tunnels started in a scope with their loops supervised, an inbox per tunnel, a raw UDP socket
 * for injecting datagrams, a forwarding proxy that records what passes through it, and a bounded wait for
 * a condition.
 */
import { type Duration, Effect, Exit, Queue, Schedule, Scope } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import { Identity } from "../../src/crypto/identity.ts"
import { supervise } from "../../src/lifecycle/supervisor.ts"
import { makeUdpEndpoint, type UdpEndpoint } from "../../src/net/udp-endpoint.ts"
import { type Packet, Protocol } from "../../src/protocol/packet.ts"
import { classifyDatagram, type DatagramKind } from "../../src/protocol/tunnel-frame.ts"
import { makeTunnel, type Tunnel, type TunnelEventOf, type TunnelLimits } from "../../src/tunnel/tunnel.ts"

export const LOOPBACK = { host: "127.0.0.1", port: 0 } as const

/** Registry stand-in: the Ed25519 key and the UDP endpoint of every node, filled in as tunnels start. */
export interface Directory {
  readonly keys: Map<number, Uint8Array>
  readonly endpoints: Map<number, NetAddress.InetAddress>
}

export const makeDirectory = (): Directory => ({ keys: new Map(), endpoints: new Map() })

export interface Delivered {
  readonly packet: Packet
  readonly from: number
}

export interface TunnelNode {
  readonly nodeId: number
  readonly identity: Identity
  readonly tunnel: Tunnel
  readonly inbox: Queue.Queue<Delivered>
  readonly events: Array<TunnelEventOf>
}

export interface StartOptions {
  readonly identity?: Identity
  readonly port?: number
  readonly limits?: Partial<TunnelLimits>
  /** Announce this endpoint for the node instead of the tunnel's own address (e.g. a proxy in front of it). */
  readonly announce?: NetAddress.InetAddress
}

/**
 * Starts a tunnel for `nodeId` in the current scope, registers its key and endpoint in `directory`, and runs
 * its loops under a supervisor forked into the same scope (interrupted and joined when the scope closes).
 */
export const startNode = (directory: Directory, nodeId: number, options: StartOptions = {}) =>
  Effect.gen(function*() {
    const identity = options.identity ?? Identity.generate()
    const inbox = yield* Queue.unbounded<Delivered>()
    const events: Array<TunnelEventOf> = []
    const tunnel = yield* makeTunnel({
      identity,
      nodeId,
      bind: { host: LOOPBACK.host, port: options.port ?? 0 },
      registryKey: (node) => Effect.succeed(directory.keys.get(node)),
      endpointOf: (node) => Effect.succeed(directory.endpoints.get(node)),
      onPacket: (packet, from) => {
        Queue.offerUnsafe(inbox, { packet, from })
      },
      onEvent: (event) => {
        events.push(event)
      },
      ...(options.limits === undefined ? {} : { limits: options.limits })
    })
    directory.keys.set(nodeId, identity.publicKey)
    directory.endpoints.set(nodeId, options.announce ?? tunnel.address)
    yield* Effect.forkScoped(supervise(tunnel.loops))
    const node: TunnelNode = { nodeId, identity, tunnel, inbox, events }
    return node
  })

/** Runs `start` in a scope of its own, so a test can stop that node (close the scope) while others go on. */
export const startStoppable = <A, E>(start: Effect.Effect<A, E, Scope.Scope>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const value = yield* start.pipe(Scope.provide(scope))
    return { value, stop: Scope.close(scope, Exit.void) }
  })

let sequence = 0

/** A datagram packet from `src` to `dst` with `payload` (default: 16 bytes numbered by a counter). */
export const datagram = (src: number, dst: number, payload?: Uint8Array): Packet => ({
  flags: 0,
  protocol: Protocol.Datagram,
  src: { network: 0, node: src },
  dst: { network: 0, node: dst },
  srcPort: 1000,
  dstPort: 1001,
  seq: ++sequence,
  ack: 0,
  window: 0,
  payload: payload ?? new Uint8Array(16).fill(sequence & 0xff)
})

const WAIT: Duration.Input = "5 seconds"

/** The next packet delivered to `node`, within `timeout`. */
export const nextDelivered = (node: TunnelNode, timeout: Duration.Input = WAIT) =>
  Queue.take(node.inbox).pipe(Effect.timeout(timeout))

/** Sends a packet from `from` to `to` and waits until `to` delivers it (the very next delivery). */
export const roundTrip = (from: TunnelNode, to: TunnelNode, payload?: Uint8Array) =>
  Effect.gen(function*() {
    const packet = datagram(from.nodeId, to.nodeId, payload)
    from.tunnel.send(to.nodeId, packet)
    const got = yield* nextDelivered(to)
    return { sent: packet, got }
  })

/**
 * Waits until `condition` holds, checking every 10 ms, for at most `timeout`. For state that changes in
 * another fiber (the KX worker) or another socket, where no event says when it is done.
 */
export const eventually = (condition: () => boolean, timeout: Duration.Input = WAIT) =>
  Effect.sync(condition).pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("10 millis") }),
    Effect.timeout(timeout)
  )

/** A raw UDP socket on loopback for injecting datagrams; records what it receives. */
export const startRawSocket = () =>
  Effect.gen(function*() {
    const received: Array<Uint8Array> = []
    const socket = yield* makeUdpEndpoint({ bind: LOOPBACK }, ({ payload }) => {
      received.push(payload)
    })
    yield* Effect.forkScoped(supervise({ reader: socket.reader, writer: socket.writer }))
    return { socket, received }
  })

export interface Proxy {
  /** Where to point the client: datagrams sent here go to the server. */
  readonly address: NetAddress.InetAddress
  readonly socket: UdpEndpoint
  /** Every datagram the client sent through the proxy, in order. */
  readonly fromClient: Array<Uint8Array>
  /** The most recent datagram of `kind` from the client. */
  readonly lastFromClient: (kind: DatagramKind) => Uint8Array | undefined
}

const sameEndpoint = (a: NetAddress.InetAddress, b: NetAddress.InetAddress): boolean =>
  NetAddress.formatInet(a) === NetAddress.formatInet(b)

/**
 * A UDP forwarder in front of `server`: whatever a client sends to it goes to `server`, whatever `server`
 * sends to it goes back to the last client. The server sees every client datagram coming from the proxy.
 * `drop` decides which client datagrams are lost on the way (they are still recorded).
 */
export const startProxy = (server: NetAddress.InetAddress, drop: (payload: Uint8Array) => boolean = () => false) =>
  Effect.gen(function*() {
    const fromClient: Array<Uint8Array> = []
    let client: NetAddress.InetAddress | undefined
    const holder: { socket?: UdpEndpoint } = {}
    const socket = yield* makeUdpEndpoint({ bind: LOOPBACK }, ({ from, payload }) => {
      if (sameEndpoint(from, server)) {
        if (client !== undefined) holder.socket?.send(payload, client)
        return
      }
      client = from
      fromClient.push(payload)
      if (!drop(payload)) holder.socket?.send(payload, server)
    })
    holder.socket = socket
    yield* Effect.forkScoped(supervise({ reader: socket.reader, writer: socket.writer }))
    const proxy: Proxy = {
      address: socket.address,
      socket,
      fromClient,
      lastFromClient: (kind) => fromClient.findLast((payload) => classifyDatagram(payload) === kind)
    }
    return proxy
  })

export interface Nat {
  /** Where the client sends: its datagrams leave towards the server from the current mapping. */
  readonly address: NetAddress.InetAddress
  /** The source address the server currently sees for the client. */
  readonly mapped: () => NetAddress.InetAddress
  /** The NAT picks a new external port; server datagrams to the old one are dropped from now on. */
  readonly remap: () => void
  /** Server datagrams that arrived at a retired mapping. */
  readonly droppedAtOldMapping: () => number
}

/**
 * A NAT in front of a client talking to `server`: the client's datagrams leave from one of two external
 * sockets, the server's replies to the current one go back to the client, and `remap` switches sockets the
 * way a NAT that lost its mapping does (the old one stops forwarding).
 */
export const startNat = (server: NetAddress.InetAddress) =>
  Effect.gen(function*() {
    let client: NetAddress.InetAddress | undefined
    let current = 0
    let dropped = 0
    const external: Array<UdpEndpoint> = []
    const inside = yield* makeUdpEndpoint({ bind: LOOPBACK }, ({ from, payload }) => {
      client = from
      external[current]?.send(payload, server)
    })
    for (const mapping of [0, 1]) {
      external.push(
        yield* makeUdpEndpoint({ bind: LOOPBACK }, ({ payload }) => {
          if (mapping !== current) dropped++
          else if (client !== undefined) inside.send(payload, client)
        })
      )
    }
    for (const socket of [inside, ...external]) yield* Effect.forkScoped(supervise({ reader: socket.reader, writer: socket.writer }))
    const nat: Nat = {
      address: inside.address,
      mapped: () => external[current]!.address,
      remap: () => {
        current = (current + 1) % external.length
      },
      droppedAtOldMapping: () => dropped
    }
    return nat
  })

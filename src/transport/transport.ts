/**
 * The transport shell (reference §8): ports, listeners, stream connections and datagrams over the tunnel.
 * It owns the pure `StreamConnection` cores, feeds them packets and time, and performs what they return:
 * segments go to the tunnel as packets, delivered bytes wait in a per-connection inbox for `read`, events
 * wake readers and writers, and one timer fiber ticks every connection at its own deadline.
 *
 * - Inbound packets arrive synchronously from the tunnel's receive path (`receive`); nothing here blocks it.
 * - Backpressure: `write` waits while the connection's send buffer is full; `read` hands out one chunk and
 *   then releases that much receive window (`consume`), so a slow reader closes the window instead of
 *   growing a buffer.
 * - Bounds: connections in total (`maxConnections`, default 4096) and per listener accept queue (64); a SYN
 *   past either is answered with RST and counted (`accept_queue_drops`, `connection_limit_drops`).
 * - A connection is removed (its port freed) when its core reports CLOSED; a failed connection keeps its
 *   typed error for `read`/`write` callers and is counted, and never affects another connection.
 */
import { Clock, Deferred, Effect, Queue, Schema, type Scope } from "effect"
import type { Addr } from "../protocol/address.ts"
import { type Packet, Protocol } from "../protocol/packet.ts"
import { AcceptQueue, EphemeralPorts } from "./ports.ts"
import { fromPacket, hasFlag, resetFor, toPacket, type Endpoints } from "./segment.ts"
import { type StreamInfo, type StreamOptions, type StreamStep, StreamConnection, StreamError } from "./stream.ts"
import { PacketFlag } from "../protocol/packet.ts"

export class TransportError extends Schema.TaggedError<TransportError>()("TransportError", {
  reason: Schema.Literals(["port_in_use", "ports_exhausted", "connection_limit", "closed"]),
  detail: Schema.String
}) {
  get code(): string {
    return this.reason
  }
  override get message(): string {
    return this.detail
  }
}

export interface ConnectionInfo extends StreamInfo {
  readonly id: number
  readonly local_port: number
  readonly remote_addr: Addr
  readonly remote_port: number
}

export interface Connection {
  readonly id: number
  readonly localPort: number
  readonly remote: Addr
  readonly remotePort: number
  /** Writes all of `bytes`, waiting while the send buffer is full. */
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, StreamError | TransportError>
  /** The next chunk of incoming bytes, or `undefined` once the peer closed its side. */
  readonly read: Effect.Effect<Uint8Array | undefined, StreamError>
  /** Half-closes our side (FIN after every written byte); reading stays possible. */
  readonly close: Effect.Effect<void>
  /** Ends the connection at once (RST). */
  readonly abort: Effect.Effect<void>
  readonly info: () => ConnectionInfo
}

export interface Listener {
  readonly port: number
  readonly accept: Effect.Effect<Connection, TransportError>
}

export interface DatagramIn {
  readonly src: Addr
  readonly srcPort: number
  readonly dstPort: number
  readonly payload: Uint8Array
}

export interface TransportOptions {
  readonly local: Addr
  /** Hands a packet to the tunnel for `dst` (synchronous, never blocks). */
  readonly sendPacket: (packet: Packet) => void
  readonly stream?: StreamOptions
  readonly maxConnections?: number
}

export interface TransportStats {
  readonly connections: number
  readonly acceptQueueDrops: number
  readonly connectionLimitDrops: number
  readonly resetsSent: number
  readonly failedConnections: number
  readonly datagramsIn: number
  readonly datagramsDropped: number
  /** Dials that ended in `dial_timeout` since the last dial that got through (the receive watchdog's input). */
  readonly consecutiveDialTimeouts: number
}

export interface Transport {
  /** The tunnel's delivery of one authenticated inner packet. */
  readonly receive: (packet: Packet) => void
  readonly dial: (remote: Addr, port: number, options?: StreamOptions) => Effect.Effect<Connection, StreamError | TransportError>
  /** Listens on `port` until the scope closes. */
  readonly listen: (port: number) => Effect.Effect<Listener, TransportError, Scope.Scope>
  /** Sends one datagram from a fresh ephemeral port (reference §8.5). */
  readonly sendDatagram: (remote: Addr, port: number, payload: Uint8Array) => Effect.Effect<void, TransportError>
  /** Receives datagrams addressed to `port` until the scope closes (at most `capacity` waiting; more are dropped). */
  readonly bindDatagrams: (port: number, capacity?: number) => Effect.Effect<Queue.Dequeue<DatagramIn>, TransportError, Scope.Scope>
  readonly connections: () => ReadonlyArray<ConnectionInfo>
  readonly stats: () => TransportStats
  /**
   * Resets every open connection, so peers learn at once instead of timing out. The owner runs it at
   * shutdown while the tunnel can still send (the transport cannot order that itself: it sits above it).
   */
  readonly abortAll: Effect.Effect<void>
  /** Drives every connection's timers; run it as an essential fiber. */
  readonly timers: Effect.Effect<never>
}

interface Conn {
  readonly id: number
  readonly key: string
  readonly endpoints: Endpoints
  readonly stream: StreamConnection
  readonly inbox: Array<Uint8Array>
  peerClosed: boolean
  error: StreamError | undefined
  closed: boolean
  /** Completed (and replaced) whenever a reader or writer may proceed. */
  wake: Deferred.Deferred<void>
  established: Deferred.Deferred<void, StreamError>
  deadline: number | undefined
  /** A dialer's ephemeral port, returned to the pool when the connection ends. */
  readonly ownsPort: boolean
  /** The listener whose accept queue holds it until the application accepts it. */
  listener: ListenerState | undefined
}

interface ListenerState {
  readonly queue: AcceptQueue<Conn>
  /** Completed (and replaced) when a connection is queued or the listener closes. */
  wake: Deferred.Deferred<void>
  closed: boolean
}

const keyOf = (remoteNode: number, remotePort: number, localPort: number) => `${remoteNode}/${remotePort}/${localPort}`

export const makeTransport = Effect.fnUntraced(function*(options: TransportOptions) {
  const clock = yield* Clock.Clock
  const now = () => clock.currentTimeMillisUnsafe()
  const ports = new EphemeralPorts()
  const conns = new Map<string, Conn>()
  const listeners = new Map<number, ListenerState>()
  const datagramPorts = new Map<number, Queue.Queue<DatagramIn>>()
  const maxConnections = options.maxConnections ?? 4096
  const wakeTimers = yield* Queue.dropping<void>(1)
  let nextId = 1
  let earliestDeadline = Number.POSITIVE_INFINITY
  const counters = {
    acceptQueueDrops: 0,
    connectionLimitDrops: 0,
    resetsSent: 0,
    failedConnections: 0,
    datagramsIn: 0,
    datagramsDropped: 0,
    consecutiveDialTimeouts: 0
  }

  const wakeUp = (waiter: { wake: Deferred.Deferred<void> }) => {
    const previous = waiter.wake
    waiter.wake = Deferred.makeUnsafe<void>()
    Deferred.doneUnsafe(previous, Effect.void)
  }

  const sendReset = (packet: Packet) => {
    const reset = resetFor(fromPacket(packet))
    if (reset === undefined) return
    counters.resetsSent++
    options.sendPacket(toPacket(reset, { local: options.local, localPort: packet.dstPort, remote: packet.src, remotePort: packet.srcPort }))
  }

  /** Performs what one step of a connection's core asks for. */
  const apply = (conn: Conn, step: StreamStep) => {
    for (const segment of step.segments) options.sendPacket(toPacket(segment, conn.endpoints))
    let wake = step.delivered.length > 0
    for (const bytes of step.delivered) conn.inbox.push(bytes)
    for (const event of step.events) {
      switch (event.type) {
        case "state_changed":
          // CLOSED is handled after this loop: `remove` wakes the reader, which must already see the error
          // of a "failed" event later in this same step (a reset read as a clean end of stream otherwise).
          if (event.to === "ESTABLISHED") Deferred.doneUnsafe(conn.established, Effect.void)
          break
        case "peer_closed":
          conn.peerClosed = true
          wake = true
          break
        case "writable":
          wake = true
          break
        case "failed":
          conn.error = event.error
          counters.failedConnections++
          Deferred.doneUnsafe(conn.established, Effect.fail(event.error))
          wake = true
          break
      }
    }
    if (step.state === "CLOSED") remove(conn)
    conn.deadline = step.nextDeadline
    if (step.nextDeadline !== undefined && step.nextDeadline < earliestDeadline) {
      earliestDeadline = step.nextDeadline
      Queue.offerUnsafe(wakeTimers, undefined)
    }
    if (wake) wakeUp(conn)
  }

  const remove = (conn: Conn) => {
    if (conn.closed) return
    conn.closed = true
    conn.deadline = undefined
    conns.delete(conn.key)
    if (conn.ownsPort) ports.release(conn.endpoints.localPort)
    conn.listener?.queue.remove(conn)
    wakeUp(conn)
  }

  const closedError = (conn: Conn) =>
    conn.error ?? new TransportError({ reason: "closed", detail: `connection ${conn.id} is closed` })

  const connectionOf = (conn: Conn): Connection => {
    const write = (bytes: Uint8Array): Effect.Effect<void, StreamError | TransportError> =>
      Effect.gen(function*() {
        let rest = bytes
        while (rest.byteLength > 0) {
          if (conn.error !== undefined || conn.closed) return yield* Effect.fail(closedError(conn))
          const step = conn.stream.write(rest, now())
          const waitFor = conn.wake
          apply(conn, step)
          rest = rest.subarray(step.accepted)
          if (step.outcome === "not_writable") return yield* Effect.fail(closedError(conn))
          if (step.outcome === "send_buffer_full") yield* Deferred.await(waitFor)
        }
      })
    const read: Effect.Effect<Uint8Array | undefined, StreamError> = Effect.gen(function*() {
      while (true) {
        const chunk = conn.inbox.shift()
        if (chunk !== undefined) {
          if (!conn.closed) apply(conn, conn.stream.consume(chunk.byteLength, now()))
          return chunk
        }
        if (conn.error !== undefined) return yield* Effect.fail(conn.error)
        if (conn.peerClosed || conn.closed) return undefined
        yield* Deferred.await(conn.wake)
      }
    })
    return {
      id: conn.id,
      localPort: conn.endpoints.localPort,
      remote: conn.endpoints.remote,
      remotePort: conn.endpoints.remotePort,
      write,
      read,
      close: Effect.sync(() => {
        if (!conn.closed) apply(conn, conn.stream.close(now()))
      }),
      abort: Effect.sync(() => {
        if (!conn.closed) apply(conn, conn.stream.abort(now()))
      }),
      info: () => ({
        ...conn.stream.info(),
        id: conn.id,
        local_port: conn.endpoints.localPort,
        remote_addr: conn.endpoints.remote,
        remote_port: conn.endpoints.remotePort
      })
    }
  }

  const register = (endpoints: Endpoints, stream: StreamConnection, ownsPort: boolean): Conn => {
    const conn: Conn = {
      id: nextId++,
      key: keyOf(endpoints.remote.node, endpoints.remotePort, endpoints.localPort),
      endpoints,
      stream,
      inbox: [],
      peerClosed: false,
      error: undefined,
      closed: false,
      wake: Deferred.makeUnsafe<void>(),
      established: Deferred.makeUnsafe<void, StreamError>(),
      deadline: undefined,
      ownsPort,
      listener: undefined
    }
    conns.set(conn.key, conn)
    return conn
  }

  const acceptSyn = (packet: Packet) => {
    const listener = listeners.get(packet.dstPort)
    if (listener === undefined) return sendReset(packet)
    if (conns.size >= maxConnections) {
      counters.connectionLimitDrops++
      return sendReset(packet)
    }
    if (listener.queue.size >= listener.queue.capacity) {
      counters.acceptQueueDrops++
      return sendReset(packet)
    }
    const endpoints: Endpoints = { local: options.local, localPort: packet.dstPort, remote: packet.src, remotePort: packet.srcPort }
    const { connection, step } = StreamConnection.accept(fromPacket(packet), now(), options.stream)
    const conn = register(endpoints, connection, false)
    conn.listener = listener
    listener.queue.offer(conn)
    apply(conn, step)
    wakeUp(listener)
  }

  const receive = (packet: Packet) => {
    if (packet.protocol === Protocol.Datagram) {
      counters.datagramsIn++
      const queue = datagramPorts.get(packet.dstPort)
      if (queue === undefined || !Queue.offerUnsafe(queue, { src: packet.src, srcPort: packet.srcPort, dstPort: packet.dstPort, payload: packet.payload })) {
        counters.datagramsDropped++
      }
      return
    }
    if (packet.protocol !== Protocol.Stream) return
    const conn = conns.get(keyOf(packet.src.node, packet.srcPort, packet.dstPort))
    if (conn !== undefined) return apply(conn, conn.stream.receive(fromPacket(packet), now()))
    if (packet.flags === PacketFlag.SYN) return acceptSyn(packet)
    if (!hasFlag(fromPacket(packet), PacketFlag.RST)) sendReset(packet)
  }

  const dial = (remote: Addr, port: number, dialOptions?: StreamOptions) =>
    Effect.gen(function*() {
      if (conns.size >= maxConnections) {
        return yield* new TransportError({ reason: "connection_limit", detail: `at most ${maxConnections} connections` })
      }
      const localPort = ports.allocate()
      if (localPort === undefined) return yield* new TransportError({ reason: "ports_exhausted", detail: "no ephemeral port left" })
      const { connection, step } = StreamConnection.dial(now(), { ...options.stream, ...dialOptions })
      const conn = register({ local: options.local, localPort, remote, remotePort: port }, connection, true)
      apply(conn, step)
      yield* Deferred.await(conn.established).pipe(
        Effect.onInterrupt(() => Effect.sync(() => apply(conn, conn.stream.abort(now())))),
        Effect.tapError((error) =>
          Effect.sync(() => {
            if (error.reason === "dial_timeout") counters.consecutiveDialTimeouts++
          })
        )
      )
      counters.consecutiveDialTimeouts = 0
      return connectionOf(conn)
    })

  const listen = (port: number) =>
    Effect.gen(function*() {
      if (listeners.has(port)) return yield* new TransportError({ reason: "port_in_use", detail: `port ${port} already has a listener` })
      const state: ListenerState = { queue: new AcceptQueue<Conn>(), wake: Deferred.makeUnsafe<void>(), closed: false }
      listeners.set(port, state)
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          listeners.delete(port)
          state.closed = true
          // Connections established but never accepted by the application are reset, not leaked.
          for (const pending of state.queue.drain()) apply(pending, pending.stream.abort(now()))
          wakeUp(state)
        })
      )
      const accept: Effect.Effect<Connection, TransportError> = Effect.gen(function*() {
        while (true) {
          const conn = state.queue.take()
          if (conn !== undefined) {
            conn.listener = undefined
            return connectionOf(conn)
          }
          if (state.closed) return yield* new TransportError({ reason: "closed", detail: `listener on port ${port} is closed` })
          yield* Deferred.await(state.wake)
        }
      })
      const listener: Listener = { port, accept }
      return listener
    })

  const sendDatagram = (remote: Addr, port: number, payload: Uint8Array) =>
    Effect.gen(function*() {
      const srcPort = ports.allocate()
      if (srcPort === undefined) return yield* new TransportError({ reason: "ports_exhausted", detail: "no ephemeral port left" })
      ports.release(srcPort) // datagrams keep no state (reference §8.5)
      options.sendPacket({
        flags: 0,
        protocol: Protocol.Datagram,
        src: options.local,
        dst: remote,
        srcPort,
        dstPort: port,
        seq: 0,
        ack: 0,
        window: 0,
        payload
      })
    })

  const bindDatagrams = (port: number, capacity = 1024) =>
    Effect.gen(function*() {
      if (datagramPorts.has(port)) return yield* new TransportError({ reason: "port_in_use", detail: `port ${port} is already bound for datagrams` })
      const queue = yield* Queue.dropping<DatagramIn>(capacity)
      datagramPorts.set(port, queue)
      yield* Effect.addFinalizer(() => Effect.sync(() => datagramPorts.delete(port)).pipe(Effect.andThen(Queue.shutdown(queue))))
      return queue as Queue.Dequeue<DatagramIn>
    })

  const timers = Effect.gen(function*() {
    while (true) {
      const t = now()
      const wait = earliestDeadline === Number.POSITIVE_INFINITY ? 1000 : Math.max(0, earliestDeadline - t)
      if (wait > 0) yield* Queue.take(wakeTimers).pipe(Effect.timeoutOption(wait))
      const at = now()
      earliestDeadline = Number.POSITIVE_INFINITY
      for (const conn of [...conns.values()]) {
        if (conn.deadline !== undefined && conn.deadline <= at) apply(conn, conn.stream.tick(at))
        if (conn.deadline !== undefined && conn.deadline < earliestDeadline) earliestDeadline = conn.deadline
      }
    }
  })

  const transport: Transport = {
    receive,
    dial,
    listen,
    sendDatagram,
    bindDatagrams,
    connections: () => [...conns.values()].map((conn) => connectionOf(conn).info()),
    stats: () => ({ ...counters, connections: conns.size }),
    abortAll: Effect.sync(() => {
      for (const conn of [...conns.values()]) apply(conn, conn.stream.abort(now()))
    }),
    timers
  }
  return transport
})

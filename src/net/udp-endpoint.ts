/**
 * One UDP socket owned by two fibers (DESIGN.md §3, §4 rule 1): a reader that hands every datagram to the
 * layer above, and a writer that drains a bounded send queue. Used by the daemon's tunnel and by the beacon.
 *
 * - Sending never blocks the caller: `send` enqueues and returns whether the datagram was accepted; a full
 *   queue drops the datagram (UDP is lossy anyway, and a data plane must not stall on one slow send) and
 *   counts it.
 * - Receiving is a pull loop over batches; the handler runs synchronously per datagram, so ordering is kept
 *   and a slow consumer slows the socket (the kernel buffer, 4 MiB by default, absorbs bursts: the default
 *   size lost ~8 % of packets under load here, DESIGN.md §8).
 * - `reader` and `writer` are the socket's essential loops: the caller runs them under its supervisor, so a
 *   socket error surfaces as the first essential failure instead of a silent dead socket.
 */
import { NodeDatagramSocket } from "@effect/platform-node"
import { Array as Arr, type Duration, Effect, Queue, type Scope } from "effect"
import type { DatagramSocketError } from "effect/socket/DatagramSocket"
import * as NetAddress from "effect/net/NetAddress"
import type { HostPort } from "../platform/host-port.ts"

export interface UdpDatagram {
  /** A plain `Uint8Array` (not a Node `Buffer`): its `slice()` copies, as the layers above expect. */
  readonly payload: Uint8Array
  readonly from: NetAddress.InetAddress
}

export interface UdpEndpointOptions {
  readonly bind: HostPort
  /** Kernel receive buffer in bytes (Linux doubles it and caps it at rmem_max). Default 4 MiB. */
  readonly kernelReceiveBufferBytes?: number
  /** Datagrams waiting to be sent; past this `send` drops. Default 8192. */
  readonly sendQueue?: number
}

export interface UdpStats {
  readonly datagramsIn: number
  readonly bytesIn: number
  readonly datagramsOut: number
  readonly bytesOut: number
  /** Dropped because the send queue was full. */
  readonly sendQueueDrops: number
  /**
   * Write batches in which the OS refused a datagram. Node sends a batch's datagrams independently and reports
   * only the first failure, so this counts batches with at least one refused datagram.
   */
  readonly sendErrors: number
  /** Dropped by the socket's own receive buffer (the reader fell behind). */
  readonly receiveDrops: number
}

export interface UdpEndpoint {
  /** The bound address (the real port when bound to port 0). */
  readonly address: NetAddress.InetAddress
  /** Enqueues one datagram; `false` when the send queue is full (dropped and counted). */
  readonly send: (payload: Uint8Array, to: NetAddress.InetAddress) => boolean
  readonly stats: () => UdpStats
  /**
   * Waits until every queued datagram has been handed to the socket (or `timeout` passed): a shutdown sends
   * its last words (resets, goodbyes) before the writer loop is stopped.
   */
  readonly drain: (timeout: Duration.Input) => Effect.Effect<void>
  /** The reader loop: never returns; fails if the socket fails. */
  readonly reader: Effect.Effect<never, DatagramSocketError>
  /** The writer loop: never returns; fails if the socket fails. */
  readonly writer: Effect.Effect<never, DatagramSocketError>
}

/** An `InetAddress` from `host` (an IP literal) and `port`, or `undefined` when `host` is not an IP. */
export const inetAddress = (host: string, port: number): NetAddress.InetAddress | undefined => {
  const parsed = NetAddress.inetAddressFromIpString(host, port)
  return parsed._tag === "Success" ? parsed.success : undefined
}

/**
 * Node hands each datagram over as a `Buffer`, whose `slice()` is a view, not a copy (DEP0158): code that
 * "keeps its own copy" of a key or a fragment with `slice()` would keep a view of the datagram instead. A
 * plain `Uint8Array` over the same memory restores the standard semantics for every layer above, for the
 * price of one small object per datagram.
 */
const plainBytes = (payload: Uint8Array): Uint8Array =>
  new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength)

/**
 * Binds the socket in the current scope (it closes with the scope) and returns the endpoint. The reader and
 * writer loops do nothing until the caller runs them.
 */
export const makeUdpEndpoint = Effect.fnUntraced(function*(
  options: UdpEndpointOptions,
  onDatagram: (datagram: UdpDatagram) => void
): Effect.fn.Return<UdpEndpoint, DatagramSocketError, Scope.Scope> {
  const socket = yield* NodeDatagramSocket.make({
    bind: { port: options.bind.port, ...(options.bind.host === undefined ? {} : { address: options.bind.host }) },
    kernelReceiveBufferSize: options.kernelReceiveBufferBytes ?? 4 * 1024 * 1024,
    receiveBuffer: { capacity: 4096, strategy: "dropping" }
  })
  const reader = yield* socket.reader // binds the socket
  const writer = yield* socket.writer
  const outbound = yield* Queue.dropping<{ readonly payload: Uint8Array; readonly address: NetAddress.InetAddress }>(
    options.sendQueue ?? 8192
  )
  const counters = { datagramsIn: 0, bytesIn: 0, datagramsOut: 0, bytesOut: 0, sendQueueDrops: 0, sendErrors: 0 }
  const countSendError = (error: DatagramSocketError): Effect.Effect<void, DatagramSocketError> => {
    if (error.reason._tag !== "DatagramSocketWriteError") return Effect.fail(error)
    counters.sendErrors++
    return Effect.void
  }

  const readLoop = Effect.gen(function*() {
    while (true) {
      const batch = yield* reader.pull
      for (const datagram of batch) {
        counters.datagramsIn++
        counters.bytesIn += datagram.payload.byteLength
        onDatagram({ payload: plainBytes(datagram.payload), from: datagram.address })
      }
    }
  })

  const writeLoop = Effect.gen(function*() {
    while (true) {
      const batch = yield* Queue.takeBetween(outbound, 1, 64)
      for (const datagram of batch) {
        counters.datagramsOut++
        counters.bytesOut += datagram.payload.byteLength
      }
      // takeBetween(1, …) never returns an empty batch; the guard tells the type system so.
      if (Arr.isReadonlyArrayNonEmpty(batch)) yield* writer.writeAll(batch).pipe(Effect.catch(countSendError))
    }
  })

  const endpoint: UdpEndpoint = {
    address: reader.address,
    send: (payload, to) => {
      const accepted = Queue.offerUnsafe(outbound, { payload, address: to })
      if (!accepted) counters.sendQueueDrops++
      return accepted
    },
    stats: () => ({ ...counters, receiveDrops: reader.dropped() }),
    drain: (timeout) =>
      Effect.gen(function*() {
        // Polls on a timer, not `yieldNow`: the writer needs the event loop's I/O callbacks to make progress.
        while (Queue.sizeUnsafe(outbound) > 0) yield* Effect.sleep("1 millis")
      }).pipe(Effect.timeoutOption(timeout), Effect.asVoid),
    reader: readLoop,
    writer: writeLoop
  }
  return endpoint
})

/**
 * The daemon's real tunnel and transport on a simulated network, in `TestClock` time: a `TunnelSocket` whose
 * datagrams travel over `SimulatedNetwork` (test/transport/simulated-network.ts: seeded loss, delay,
 * duplication, reordering, partitions) instead of a kernel socket.
 *
 * Why a socket and not a mock of the tunnel: `makeTunnel` accepts any `TunnelSocket` (`{ address, attach }`), so
 * everything above the socket — key exchange, retransmits, sessions, fragments, streams, the shutdown order of
 * the data plane — is the production code, and only the wire is simulated.
 *
 * Time: the network keeps its own event queue; while packets are in flight a clock fiber (`SimWorld`) sleeps one
 * simulated millisecond at a time on Effect's `Clock` and, on each wake, runs the network's events up to the
 * clock's time (a send first brings the network up to the clock, so a packet leaves at the clock's time). Under `TestClock`
 * the wake is tracked, so a datagram delivered into a socket's reader queue, the reader fiber it resumes, and
 * whatever that fiber sends or forks all run before `TestClock.adjust` moves on: one seed, one run. (Network
 * time lags the clock by at most one tick, the same for every run.)
 *
 * The socket mirrors `makeUdpEndpoint`: a bounded inbound queue read by the `reader` loop (which calls the
 * tunnel's handler), a bounded outbound queue drained by the `writer` loop, `drain` polling the outbound queue
 * with bounded sleeps. Closing the socket's scope detaches it: datagrams to it are dropped from then on, as a
 * closed UDP port does.
 */
import { Clock, type Duration, Effect, Latch, Queue, type Scope } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import type { UdpDatagram, UdpEndpoint } from "../../src/net/udp-endpoint.ts"
import type { TunnelSocket } from "../../src/tunnel/tunnel.ts"
import { type NetworkOptions, SimulatedNetwork } from "../transport/simulated-network.ts"

export interface SimWorld {
  readonly network: SimulatedNetwork<Uint8Array>
  readonly seed: number
  /** A fresh socket with the next free address (10.0.0.<n>:<port>), closed with the current scope. */
  readonly socket: (port?: number) => Effect.Effect<TunnelSocket, never, Scope.Scope>
  /** The seed, the link conditions and the simulated time: everything a failure message needs to be replayed. */
  readonly describe: () => string
}

/** The environment variable that pins the seed of every simulation (replays one failing run). */
export const SIM_SEED_ENV = "SIM_SEED"

/** `SIM_SEED` when set (a failure message printed it), else `fallback`. */
export const simSeed = (fallback: number): number => {
  const pinned = process.env[SIM_SEED_ENV]
  if (pinned === undefined || pinned === "") return fallback
  const parsed = Number(pinned)
  if (!Number.isInteger(parsed)) throw new Error(`${SIM_SEED_ENV}=${pinned} is not an integer`)
  return parsed
}

const TICK_MS = 1
const NOOP = (): void => {}

/** What a socket needs of its world: the network, and a hook that keeps network time in step with the clock. */
export interface SimWire {
  readonly network: SimulatedNetwork<Uint8Array>
  /** Brings network time up to the clock (delivering what is due), before a send. */
  readonly sync: () => void
  /** Tells the clock fiber that a packet is in flight. */
  readonly sent: () => void
}

/**
 * Creates a simulated network and its clock fiber in the current scope. Build the world in an outer scope and
 * the nodes in inner ones: the clock fiber belongs to the world, not to any node.
 *
 * The clock fiber ticks (one simulated millisecond per wake) only while a packet is in flight; otherwise it
 * waits for the next send. Long quiet stretches (a 2-minute idle timeout) then cost no wakes at all.
 */
export const makeSimWorld = (options: NetworkOptions<Uint8Array>): Effect.Effect<SimWorld, never, Scope.Scope> =>
  Effect.gen(function*() {
    const network = new SimulatedNetwork<Uint8Array>(options)
    const clock = yield* Clock.Clock
    const startMs = clock.currentTimeMillisUnsafe()
    const stats = network.stats
    const inFlight = () => stats.sent + stats.duplicated - stats.lost - stats.partitioned - stats.delivered
    // Network time is clock time since the world was made.
    const sync = () => {
      const target = clock.currentTimeMillisUnsafe() - startMs
      if (target <= network.now) return
      network.schedule(target, NOOP) // so that `now` reaches the target even if nothing else is due
      network.run(() => false, target)
    }
    const busy = yield* Latch.make(false)
    const wire: SimWire = { network, sync, sent: () => void busy.openUnsafe() }
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      if (inFlight() <= 0) {
        yield* busy.close
        yield* busy.await
      }
      yield* Effect.sleep(TICK_MS)
      sync()
    })))

    let nextHost = 1
    const socket = (port = 37_000) =>
      Effect.gen(function*() {
        const host = nextHost++
        const address = NetAddress.inetAddressFromIpStringUnsafe(`10.0.${host >> 8}.${host & 0xff}`, port)
        return yield* makeSimulatedSocket(wire, address)
      })
    return {
      network,
      seed: options.seed,
      socket,
      describe: () => `${network.describe()} (replay with ${SIM_SEED_ENV}=${options.seed})`
    }
  })

export interface SimulatedSocketOptions {
  /** Datagrams waiting for the reader; past this they are dropped (a full kernel buffer). Default 4096. */
  readonly receiveQueue?: number
  /** Datagrams waiting for the writer; past this `send` drops. Default 8192. */
  readonly sendQueue?: number
}

/** A `TunnelSocket` bound to `address` on `network`, detached when the current scope closes. */
export const makeSimulatedSocket = (
  wire: SimWire,
  address: NetAddress.InetAddress,
  options: SimulatedSocketOptions = {}
): Effect.Effect<TunnelSocket, never, Scope.Scope> =>
  Effect.gen(function*() {
    const network = wire.network
    const self = NetAddress.formatInet(address)
    const inbound = yield* Queue.dropping<UdpDatagram>(options.receiveQueue ?? 4096)
    const outbound = yield* Queue.dropping<{ readonly payload: Uint8Array; readonly to: NetAddress.InetAddress }>(
      options.sendQueue ?? 8192
    )
    const counters = { datagramsIn: 0, bytesIn: 0, datagramsOut: 0, bytesOut: 0, sendQueueDrops: 0, sendErrors: 0, receiveDrops: 0 }
    const senders = new Map<string, NetAddress.InetAddress>()

    network.attach(self, (packet, from) => {
      const source = senders.get(from) ?? parseInet(from)
      senders.set(from, source)
      // A copy per delivery: a duplicated packet is one array on the network, two datagrams to a socket.
      if (!Queue.offerUnsafe(inbound, { payload: packet.slice(), from: source })) counters.receiveDrops++
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => network.attach(self, NOOP)))

    let attached = false
    const attach = (onDatagram: (datagram: UdpDatagram) => void): UdpEndpoint => {
      if (attached) throw new Error("a tunnel socket serves one tunnel")
      attached = true
      return {
        address,
        send: (payload, to) => {
          const accepted = Queue.offerUnsafe(outbound, { payload, to })
          if (!accepted) counters.sendQueueDrops++
          return accepted
        },
        stats: () => ({ ...counters }),
        drain: (timeout: Duration.Input) =>
          Effect.gen(function*() {
            while (Queue.sizeUnsafe(outbound) > 0) yield* Effect.sleep("1 millis")
          }).pipe(Effect.timeoutOption(timeout), Effect.asVoid),
        reader: Effect.forever(Effect.flatMap(Queue.takeBetween(inbound, 1, 64), (batch) =>
          Effect.sync(() => {
            for (const datagram of batch) {
              counters.datagramsIn++
              counters.bytesIn += datagram.payload.byteLength
              onDatagram(datagram)
            }
          }))),
        writer: Effect.forever(Effect.flatMap(Queue.takeBetween(outbound, 1, 64), (batch) =>
          Effect.sync(() => {
            wire.sync()
            for (const datagram of batch) {
              counters.datagramsOut++
              counters.bytesOut += datagram.payload.byteLength
              network.send(self, NetAddress.formatInet(datagram.to), datagram.payload)
            }
            wire.sent()
          })))
      }
    }
    const socket: TunnelSocket = { address, attach }
    return socket
  })

const parseInet = (text: string): NetAddress.InetAddress => NetAddress.inetAddressFromStringUnsafe(text)

/**
 * The daemon's data plane (DESIGN.md §3): the tunnel (encrypted UDP to peers) under the transport (ports,
 * streams, datagrams) with the built-in echo service on port 7.
 *
 * Built in the caller's scope, it runs its own loops — the socket reader and writer, the tunnel's tick and
 * key-exchange workers, the transport's timers — under a supervisor: the first of them to fail ends
 * `failure`, which the daemon's own supervisor watches as one essential fiber ("data plane").
 *
 * Closing the scope stops it in order: open connections are reset while the tunnel can still send, the reset
 * datagrams are flushed (bounded), then the loops are interrupted and joined, then the socket closes.
 */
import { Effect, Fiber } from "effect"
import { addBoundedFinalizer } from "../lifecycle/bounded.ts"
import { type EssentialFiberFailed, supervise } from "../lifecycle/supervisor.ts"
import { HEADER_BYTES } from "../protocol/packet.ts"
import { MAX_UNFRAGMENTED_FRAME_BYTES, MIN_ENCRYPTED_FRAME_BYTES } from "../protocol/tunnel-frame.ts"
import type * as NetAddress from "effect/net/NetAddress"
import type { Identity } from "../crypto/identity.ts"
import type { HostPort } from "../platform/host-port.ts"
import { type BuiltInServicesOptions, serveBuiltInServices } from "../services/built-in.ts"
import type { StreamOptions } from "../transport/stream.ts"
import { makeTransport, type Transport } from "../transport/transport.ts"
import { makeTunnel, type Tunnel, type TunnelLimits, type TunnelOptions, type TunnelSocket } from "../tunnel/tunnel.ts"

/**
 * The largest stream segment payload whose encrypted frame still fits one datagram (1223 − 36 − 34 = 1153
 * bytes). The reference sends 4096-byte segments and splits each frame into PILF fragments, which multiplies
 * the loss of a segment by its fragment count: with 5 % datagram loss a 10 MB transfer took 77 s at 4096 and
 * 3 s at this size on loopback (docs/PERFORMANCE.md), for about 40 % less throughput on a loss-free link.
 * Go peers accept any segment size, so this is a sender-side choice.
 */
export const UNFRAGMENTED_MSS = MAX_UNFRAGMENTED_FRAME_BYTES - MIN_ENCRYPTED_FRAME_BYTES - HEADER_BYTES

export interface DataPlaneOptions<E1, E2> {
  readonly identity: Identity
  readonly nodeId: number
  /** Where to bind the tunnel's socket, or a socket bound before registration (`bindTunnelSocket`). */
  readonly bind: HostPort | TunnelSocket
  /** The Ed25519 key the registry holds for a node, to authenticate its key exchange. */
  readonly registryKey: (nodeId: number) => Effect.Effect<Uint8Array | undefined, E1>
  /** Where to reach a node we have not heard from yet. */
  readonly endpointOf: (nodeId: number) => Effect.Effect<NetAddress.InetAddress | undefined, E2>
  /** Stream options; `mss` defaults to `UNFRAGMENTED_MSS`. */
  readonly stream?: StreamOptions
  readonly tunnelLimits?: Partial<TunnelLimits>
  /** The beacon and its hooks (see `TunnelOptions`); without a beacon every frame goes direct. */
  readonly beacon?: Pick<TunnelOptions<E1, E2>, "beacon" | "isRelayOnly" | "onPublicEndpoint" | "onBeaconNotify">
  /** Options of the built-in services (echo, …). */
  readonly services?: BuiltInServicesOptions
  /** The tunnel's events (`tunnel.established`, `tunnel.rekey_gave_up`, …), e.g. to the event bus. */
  readonly onTunnelEvent?: TunnelOptions<E1, E2>["onEvent"]
}

export interface DataPlane {
  readonly tunnel: Tunnel
  readonly transport: Transport
  /** Fails with the first of the data plane's loops to end; never succeeds. */
  readonly failure: Effect.Effect<never, EssentialFiberFailed>
}

export const makeDataPlane = Effect.fnUntraced(function*<E1, E2>(options: DataPlaneOptions<E1, E2>) {
  // The tunnel delivers into the transport and the transport sends through the tunnel: each is built with a
  // reference to the other that is filled in before any packet can flow (the loops are not running yet).
  const below: { tunnel?: Tunnel } = {}
  const transport: Transport = yield* makeTransport({
    local: { network: 0, node: options.nodeId },
    sendPacket: (packet) => void below.tunnel?.send(packet.dst.node, packet),
    stream: { mss: UNFRAGMENTED_MSS, ...options.stream }
  })
  const tunnel = yield* makeTunnel({
    identity: options.identity,
    nodeId: options.nodeId,
    bind: options.bind,
    registryKey: options.registryKey,
    endpointOf: options.endpointOf,
    onPacket: (packet) => transport.receive(packet),
    ...options.beacon,
    ...(options.onTunnelEvent === undefined ? {} : { onEvent: options.onTunnelEvent }),
    ...(options.tunnelLimits === undefined ? {} : { limits: options.tunnelLimits })
  })
  below.tunnel = tunnel
  yield* serveBuiltInServices(transport, options.services ?? {})
  const loops = yield* Effect.forkScoped(supervise({ ...tunnel.loops, "transport-timers": transport.timers }))
  // Added after the loops' fiber, so it runs before that fiber is interrupted (finalizers run in reverse).
  yield* addBoundedFinalizer("reset open connections", "1 second", transport.abortAll.pipe(Effect.andThen(tunnel.drain("500 millis"))))
  const dataPlane: DataPlane = { tunnel, transport, failure: Fiber.join(loops) }
  return dataPlane
})

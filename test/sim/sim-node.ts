/**
 * A daemon's data plane (tunnel + transport + built-in services, `makeDataPlane`) on a simulated socket, with
 * the registry replaced by a directory of the world's nodes: `registryKey` and `endpointOf` answer from the
 * identities and addresses the harness generated, at once and deterministically.
 *
 * Identities come from the seed (`Identity.fromSeed`), so one seed gives the same keys, the same frames and the
 * same run. Each node lives in a scope of its own (`node.scope`), which a test closes to shut the node down at
 * the moment it chooses; closing it runs the production shutdown order (reset connections, drain, join loops).
 */
import { Effect, Exit, Scope } from "effect"
import type * as NetAddress from "effect/net/NetAddress"
import { Identity } from "../../src/crypto/identity.ts"
import { type DataPlane, type DataPlaneOptions, makeDataPlane } from "../../src/daemon/data-plane.ts"
import { makeAddr } from "../../src/protocol/address.ts"
import type { Addr } from "../../src/protocol/address.ts"
import { Rng } from "../transport/simulated-network.ts"
import type { SimWorld } from "./simulated-socket.ts"

export interface SimNode {
  readonly nodeId: number
  readonly addr: Addr
  readonly identity: Identity
  readonly address: NetAddress.InetAddress
  readonly plane: DataPlane
  /** The node's own scope: closing it shuts the node down. */
  readonly scope: Scope.Closeable
  /** Closes `scope` (idempotent). */
  readonly shutdown: Effect.Effect<void>
}

/** The world's directory: what a registry would answer about each node. */
export class SimDirectory {
  readonly #keys = new Map<number, Uint8Array>()
  readonly #addresses = new Map<number, NetAddress.InetAddress>()
  add(nodeId: number, identity: Identity, address: NetAddress.InetAddress): void {
    this.#keys.set(nodeId, identity.publicKey)
    this.#addresses.set(nodeId, address)
  }
  readonly registryKey = (nodeId: number): Effect.Effect<Uint8Array | undefined> => Effect.sync(() => this.#keys.get(nodeId))
  readonly endpointOf = (nodeId: number): Effect.Effect<NetAddress.InetAddress | undefined> =>
    Effect.sync(() => this.#addresses.get(nodeId))
}

export type SimNodeOptions = Partial<Pick<DataPlaneOptions<never, never>, "stream" | "tunnelLimits" | "services">>

/**
 * Builds node `nodeId` in a new scope forked from the current one (so the node is closed with the test at the
 * latest). Its identity is derived from the world's seed and the node ID.
 */
export const makeSimNode = (world: SimWorld, directory: SimDirectory, nodeId: number, options: SimNodeOptions = {}) =>
  Effect.gen(function*() {
    const parent = yield* Scope.Scope
    const scope = yield* Scope.fork(parent)
    const identity = Identity.fromSeed(new Rng(world.seed ^ Math.imul(nodeId, 0x9e3779b1)).bytes(32))
    const socket = yield* world.socket().pipe(Scope.provide(scope))
    directory.add(nodeId, identity, socket.address)
    const plane = yield* makeDataPlane({
      identity,
      nodeId,
      bind: socket,
      registryKey: directory.registryKey,
      endpointOf: directory.endpointOf,
      ...options
    }).pipe(Scope.provide(scope))
    const node: SimNode = {
      nodeId,
      addr: makeAddr(0, nodeId),
      identity,
      address: socket.address,
      plane,
      scope,
      shutdown: Scope.close(scope, Exit.void)
    }
    return node
  })

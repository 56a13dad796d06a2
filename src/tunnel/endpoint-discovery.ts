/**
 * Endpoint discovery (reference §7 "STUN"): before registering, ask the beacon which `ip:port` it sees our
 * tunnel socket at — behind an endpoint-independent NAT that is the address every peer will reach us on.
 * The reference binds a temporary socket to the listen address for this; we borrow the tunnel socket itself
 * (`BoundTunnelSocket.borrow`), so the answer is about the very mapping peers will use even when the
 * socket's port was picked by the kernel.
 *
 * A Discover with node ID 0 (anonymous) goes out every `resendEvery` until a DiscoverReply from the beacon's
 * address arrives or `timeout` passes: `undefined` then, and the caller falls back to the address the
 * registry observes. The beacon link (`beacon-link.ts`) speaks the messages, as it does for the tunnel later.
 */
import { Deferred, type Duration, Effect, Option } from "effect"
import type * as NetAddress from "effect/net/NetAddress"
import { type BeaconLink, makeBeaconLink } from "./beacon-link.ts"
import type { BoundTunnelSocket } from "./tunnel.ts"

export interface DiscoveryOptions {
  readonly beacon: NetAddress.InetAddress
  readonly timeout: Duration.Input
  readonly resendEvery?: Duration.Input
}

/** Node ID 0: the beacon answers and records nothing (we have no node ID before registering). */
const ANONYMOUS = 0

/** Our endpoint as the beacon sees it (`host:port`), or `undefined` if it did not answer in time. */
export const discoverEndpoint = (socket: BoundTunnelSocket, options: DiscoveryOptions): Effect.Effect<string | undefined> =>
  Effect.scoped(Effect.gen(function*() {
    const answer = yield* Deferred.make<string>()
    const lent: { link?: BeaconLink } = {}
    const udp = yield* socket.borrow((datagram) => {
      const input = lent.link?.accept(datagram.payload, datagram.from)
      if (input?._tag === "DiscoverReply") Deferred.doneUnsafe(answer, Effect.succeed(input.endpoint))
    })
    const link = makeBeaconLink(udp, options.beacon)
    lent.link = link
    const ask = Effect.sync(() => link.discover(ANONYMOUS)).pipe(
      Effect.andThen(Effect.sleep(options.resendEvery ?? "500 millis")),
      Effect.forever
    )
    yield* Effect.forkScoped(ask)
    return Option.getOrUndefined(yield* Deferred.await(answer).pipe(Effect.timeoutOption(options.timeout)))
  }))

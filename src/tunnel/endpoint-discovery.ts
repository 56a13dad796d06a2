/**
 * Endpoint discovery (reference §7 "STUN"): before registering, ask the beacon which `ip:port` it sees our
 * tunnel socket at — behind an endpoint-independent NAT that is the address every peer will reach us on.
 * The reference binds a temporary socket to the listen address for this; we borrow the tunnel socket itself
 * (`BoundTunnelSocket.borrow`), so the answer is about the very mapping peers will use even when the
 * socket's port was picked by the kernel.
 *
 * A Discover with node ID 0 (anonymous) goes out every `resendEvery` until a DiscoverReply from the beacon's
 * address arrives or `timeout` passes: `undefined` then, and the caller falls back to the address the
 * registry observes.
 */
import { Deferred, type Duration, Effect, Option, Result } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import { inetAddress } from "../net/udp-endpoint.ts"
import { decodeBeaconMessage, encodeBeaconMessage } from "../protocol/beacon.ts"
import type { BoundTunnelSocket } from "./tunnel.ts"

export interface DiscoveryOptions {
  readonly beacon: NetAddress.InetAddress
  readonly timeout: Duration.Input
  readonly resendEvery?: Duration.Input
}

const DISCOVER_ANONYMOUS = encodeBeaconMessage({ _tag: "Discover", node: 0 })

/** Our endpoint as the beacon sees it (`host:port`), or `undefined` if it did not answer in time. */
export const discoverEndpoint = (socket: BoundTunnelSocket, options: DiscoveryOptions): Effect.Effect<string | undefined> =>
  Effect.scoped(Effect.gen(function*() {
    const beaconText = NetAddress.formatInet(options.beacon)
    const answer = yield* Deferred.make<string>()
    const udp = yield* socket.borrow((datagram) => {
      if (NetAddress.formatInet(datagram.from) !== beaconText) return
      const decoded = decodeBeaconMessage(datagram.payload)
      if (Result.isFailure(decoded) || decoded.success._tag !== "DiscoverReply") return
      const seen = inetAddress(decoded.success.endpoint.ip, decoded.success.endpoint.port)
      if (seen !== undefined) Deferred.doneUnsafe(answer, Effect.succeed(NetAddress.formatInet(seen)))
    })
    const ask = Effect.sync(() => udp.send(DISCOVER_ANONYMOUS, options.beacon)).pipe(
      Effect.andThen(Effect.sleep(options.resendEvery ?? "500 millis")),
      Effect.forever
    )
    yield* Effect.forkScoped(ask)
    return Option.getOrUndefined(yield* Deferred.await(answer).pipe(Effect.timeoutOption(options.timeout)))
  }))

/**
 * A lossy UDP link between two real sockets, for data-plane tests: a forwarder on loopback that passes every
 * datagram from `a` to `b` and back, dropping each with probability `loss` (seeded, so a failure replays).
 * Each side talks to the link's address instead of the other side's.
 */
import { Effect } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import { supervise } from "../../src/lifecycle/supervisor.ts"
import { makeUdpEndpoint, type UdpEndpoint } from "../../src/net/udp-endpoint.ts"
import { mulberry32 } from "../transport/simulated-network.ts"

export interface LossyLink {
  /** Where `a` should send to reach `b`. */
  readonly towardB: NetAddress.InetAddress
  /** Where `b` should send to reach `a`. */
  readonly towardA: NetAddress.InetAddress
  readonly dropped: () => number
  readonly forwarded: () => number
}

export const startLossyLink = (a: NetAddress.InetAddress, b: NetAddress.InetAddress, loss: number, seed: number) =>
  Effect.gen(function*() {
    const random = mulberry32(seed)
    let dropped = 0
    let forwarded = 0
    const sockets: { facingA?: UdpEndpoint; facingB?: UdpEndpoint } = {}
    const forward = (via: () => UdpEndpoint | undefined, to: NetAddress.InetAddress) => ({ payload }: { payload: Uint8Array }) => {
      if (random() < loss) {
        dropped++
        return
      }
      forwarded++
      via()?.send(payload, to)
    }
    // `facingA` receives from a and sends to a; `facingB` likewise for b.
    sockets.facingA = yield* makeUdpEndpoint({ bind: { host: "127.0.0.1", port: 0 } }, forward(() => sockets.facingB, b))
    sockets.facingB = yield* makeUdpEndpoint({ bind: { host: "127.0.0.1", port: 0 } }, forward(() => sockets.facingA, a))
    yield* Effect.forkScoped(supervise({
      aReader: sockets.facingA.reader,
      aWriter: sockets.facingA.writer,
      bReader: sockets.facingB.reader,
      bWriter: sockets.facingB.writer
    }))
    const link: LossyLink = {
      towardB: sockets.facingA.address,
      towardA: sockets.facingB.address,
      dropped: () => dropped,
      forwarded: () => forwarded
    }
    return link
  })


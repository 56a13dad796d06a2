/**
 * Turns a configured `host:port` into a socket address once, at startup: an IP literal as is, a name through
 * the system resolver (bounded). A name that does not resolve is a configuration problem the operator must
 * see at start, not a silent fallback.
 */
import { Data, Effect } from "effect"
import type * as NetAddress from "effect/net/NetAddress"
import { lookup } from "node:dns/promises"
import { formatHostPort, type HostPort } from "../platform/host-port.ts"
import { inetAddress } from "./udp-endpoint.ts"

export class UnresolvableAddress extends Data.TaggedError("UnresolvableAddress")<{
  readonly address: string
  readonly detail: string
}> {
  override get message(): string {
    return `cannot resolve ${this.address}: ${this.detail} (hint: use an IP address or check DNS)`
  }
}

const RESOLVE_TIMEOUT = "5 seconds"

export const resolveInetAddress = (hp: HostPort): Effect.Effect<NetAddress.InetAddress, UnresolvableAddress> => {
  const host = hp.host ?? "127.0.0.1"
  const text = formatHostPort(hp, "127.0.0.1")
  const literal = inetAddress(host, hp.port)
  if (literal !== undefined) return Effect.succeed(literal)
  return Effect.tryPromise({
    try: () => lookup(host),
    catch: (error) => new UnresolvableAddress({ address: text, detail: error instanceof Error ? error.message : String(error) })
  }).pipe(
    Effect.timeoutOrElse({
      duration: RESOLVE_TIMEOUT,
      orElse: () => Effect.fail(new UnresolvableAddress({ address: text, detail: `no answer within ${RESOLVE_TIMEOUT}` }))
    }),
    Effect.flatMap((found) => {
      const address = inetAddress(found.address, hp.port)
      return address === undefined
        ? Effect.fail(new UnresolvableAddress({ address: text, detail: `resolver answered ${found.address}` }))
        : Effect.succeed(address)
    })
  )
}

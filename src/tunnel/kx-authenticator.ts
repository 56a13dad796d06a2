/**
 * Turns a received key-exchange frame into the key-exchange core's input (reference §4.1), or refuses it:
 *
 * - PILA: the signature must verify against the Ed25519 key the **registry** holds for the claimed node,
 *   never against the copy in the frame. The registry's key comes from `RegistryKeyCache` (peer-keys.ts),
 *   which says when to look it up: nothing cached → fetch; cached but different from the frame's → the peer
 *   may have rotated, refetch once; recently found missing → refuse without asking (negative cache).
 * - PILK: the core needs to know whether the registry knows the node (a known node's PILK is a key request,
 *   answered with our PILA, never accepted); the same cache answers, with a lookup when it cannot.
 *
 * Lookups are the only asynchronous step and each is bounded by `lookupTimeout`; a failed or timed-out
 * lookup counts as "the registry has no key", which the cache then remembers for 3 s. Refusals are counted
 * and logged at Debug only: they are per datagram, and a log line per forged frame would be a log flood.
 */
import { type Duration, Effect } from "effect"
import { verifyKeyExchange } from "../crypto/session.ts"
import type { AuthKeyExchangeFrame, KeyExchangeFrame } from "../protocol/tunnel-frame.ts"
import type { KeyExchangeInput, Via } from "./key-exchange.ts"
import type { RegistryKeyCache } from "./peer-keys.ts"
import type { KxRejection, TunnelCounters } from "./tunnel-stats.ts"

export interface KxAuthenticatorOptions<E> {
  readonly ownNodeId: number
  readonly cache: RegistryKeyCache
  /** The registry's Ed25519 key for a node, `undefined` when it has none. */
  readonly registryKey: (nodeId: number) => Effect.Effect<Uint8Array | undefined, E>
  readonly lookupTimeout: Duration.Input
  readonly counters: TunnelCounters
  readonly nowMs: () => number
}

export type KxAuthenticator = (
  frame: KeyExchangeFrame | AuthKeyExchangeFrame,
  via: Via
) => Effect.Effect<KeyExchangeInput | undefined>

export const makeKxAuthenticator = <E>(options: KxAuthenticatorOptions<E>): KxAuthenticator => {
  const { cache, counters, nowMs } = options

  const lookup = (nodeId: number): Effect.Effect<Uint8Array | undefined> => {
    counters.registry_lookups++
    return options.registryKey(nodeId).pipe(
      Effect.timeout(options.lookupTimeout),
      Effect.catch((error) =>
        Effect.sync(() => {
          counters.registry_lookup_failures++
        }).pipe(Effect.andThen(Effect.logDebug("registry key lookup failed", error)), Effect.as(undefined))
      ),
      Effect.annotateLogs("peer_node", nodeId)
    )
  }

  const reject = (reason: KxRejection, nodeId: number): Effect.Effect<undefined> =>
    Effect.sync(() => {
      counters.drops.kx_rejected[reason]++
    }).pipe(
      Effect.andThen(Effect.logDebug(`key exchange refused: ${reason}`)),
      Effect.annotateLogs("peer_node", nodeId),
      Effect.as(undefined)
    )

  const verified = (frame: AuthKeyExchangeFrame, registryKey: Uint8Array, via: Via): Effect.Effect<KeyExchangeInput | undefined> => {
    if (!verifyKeyExchange(registryKey, frame.node, frame.x25519, frame.signature)) return reject("bad_signature", frame.node)
    counters.kx_accepted++
    return Effect.succeed({ _tag: "AuthKeyExchange", x25519: frame.x25519, via })
  }

  const authenticatePila = (frame: AuthKeyExchangeFrame, via: Via): Effect.Effect<KeyExchangeInput | undefined> => {
    const decision = cache.forPila(frame.node, frame.ed25519, nowMs())
    switch (decision._tag) {
      case "UseCached":
        return verified(frame, decision.key, via)
      case "Reject":
        return reject(decision.reason, frame.node)
      case "Fetch":
      case "Refetch":
        return Effect.flatMap(lookup(frame.node), (registryKey) => {
          const fetched = cache.fetched(frame.node, frame.ed25519, registryKey, nowMs())
          return fetched._tag === "Verify" ? verified(frame, fetched.key, via) : reject(fetched.reason, frame.node)
        })
    }
  }

  const pilkInput = (frame: KeyExchangeFrame, via: Via, registryKnowsNode: boolean): KeyExchangeInput => {
    counters.kx_accepted++
    return { _tag: "KeyExchange", x25519: frame.x25519, via, registryKnowsNode }
  }

  const authenticatePilk = (frame: KeyExchangeFrame, via: Via): Effect.Effect<KeyExchangeInput> => {
    const knowledge = cache.knowledge(frame.node, nowMs())
    if (knowledge._tag !== "Fetch") return Effect.succeed(pilkInput(frame, via, knowledge._tag === "Known"))
    return Effect.map(lookup(frame.node), (registryKey) => {
      cache.record(frame.node, registryKey, nowMs())
      return pilkInput(frame, via, registryKey !== undefined)
    })
  }

  return (frame, via) => {
    // Our own node ID: a reflection of our frame, or someone claiming to be us. Neither gets a session.
    if (frame.node === options.ownNodeId) return reject("own_node", frame.node)
    return frame._tag === "AuthKeyExchange" ? authenticatePila(frame, via) : authenticatePilk(frame, via)
  }
}

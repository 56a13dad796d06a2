/**
 * The tunnel's view of the registry (reference §6): a peer's Ed25519 key (`lookup`) to authenticate its key
 * exchange, and its real endpoint (`resolve`, signed by us) to dial it. Both answer `undefined` when the
 * registry has no usable answer; transport failures stay typed so the tunnel can count them.
 *
 * Uses a client of its own, not the registry session's: a lookup must never queue behind a slow `register`,
 * and the session's calls are serialized on its connection.
 */
import { Effect, Result } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import { decodeBase64 } from "../crypto/base64.ts"
import type { Identity } from "../crypto/identity.ts"
import type { DecodeError } from "../protocol/errors.ts"
import { decodeRegistryReply, resolveChallenge } from "../protocol/registry.ts"
import type { RegistryClient, RegistryRejected, RegistryUnavailable } from "../registry/client.ts"

export type DirectoryError = RegistryUnavailable | RegistryRejected | DecodeError

export interface RegistryDirectory {
  readonly registryKey: (nodeId: number) => Effect.Effect<Uint8Array | undefined, DirectoryError>
  readonly endpointOf: (nodeId: number) => Effect.Effect<NetAddress.InetAddress | undefined, DirectoryError>
  /** Whether the node's last `resolve` said `relay_only` (false when never resolved). */
  readonly isRelayOnly: (nodeId: number) => boolean
}

/** Relay-only nodes remembered from `resolve` answers; the oldest is forgotten past this. */
const MAX_RELAY_ONLY_NODES = 4096

export const makeRegistryDirectory = (client: RegistryClient, identity: Identity, ownNodeId: number): RegistryDirectory => {
  const relayOnly = new Set<number>()
  const remember = (nodeId: number, only: boolean): void => {
    relayOnly.delete(nodeId)
    if (!only) return
    relayOnly.add(nodeId)
    if (relayOnly.size > MAX_RELAY_ONLY_NODES) relayOnly.delete(relayOnly.values().next().value ?? nodeId)
  }
  return {
    registryKey: (nodeId) =>
      client.call({ type: "lookup", node_id: nodeId }).pipe(
        Effect.flatMap((reply) => Effect.fromResult(decodeRegistryReply(reply))),
        Effect.map((reply) => reply.type === "lookup_ok" ? decodeBase64(reply.public_key) : undefined)
      ),
    endpointOf: (nodeId) =>
      client.call({
        type: "resolve",
        node_id: nodeId,
        requester_id: ownNodeId,
        signature: identity.signChallenge(resolveChallenge(ownNodeId, nodeId))
      }).pipe(
        Effect.flatMap((reply) => Effect.fromResult(decodeRegistryReply(reply))),
        Effect.map((reply) => {
          if (reply.type !== "resolve_ok") return undefined
          remember(nodeId, reply.relay_only === true)
          const parsed = NetAddress.inetAddressFromString(reply.real_addr)
          return Result.isSuccess(parsed) ? parsed.success : undefined
        })
      ),
    isRelayOnly: (nodeId) => relayOnly.has(nodeId)
  }
}

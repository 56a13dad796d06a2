/**
 * Our side of the key exchange (reference §4.1, §4.5): one X25519 key pair per tunnel start, and the two
 * frames that announce it — the PILA (signed with our Ed25519 identity) and the PILK (the bare key, sent
 * along as a "key request" while we hold no session).
 *
 * Both frames are built once per X25519 key and their bytes reused for every send: the signature covers only
 * `auth ‖ node ID ‖ X25519 key`, so it never changes while the key does not, and signing once saves an
 * Ed25519 signature per retransmit, reply and recovery. The bytes are never mutated after this (the UDP
 * writer may still hold them in its queue).
 */
import type { Identity } from "../crypto/identity.ts"
import { generateTunnelKeyPair, signKeyExchange, type TunnelKeyPair } from "../crypto/session.ts"
import { encodeAuthKeyExchangeFrame, encodeKeyExchangeFrame } from "../protocol/tunnel-frame.ts"

export interface OwnKeyExchange {
  readonly keyPair: TunnelKeyPair
  /** Our PILA: node ID ‖ X25519 key ‖ Ed25519 key ‖ signature. */
  readonly pila: Uint8Array
  /** Our PILK: node ID ‖ X25519 key. */
  readonly pilk: Uint8Array
}

/** Builds (and signs, once) our key-exchange frames for `keyPair`, a fresh key pair by default. */
export const makeOwnKeyExchange = (
  identity: Identity,
  nodeId: number,
  keyPair: TunnelKeyPair = generateTunnelKeyPair()
): OwnKeyExchange => ({
  keyPair,
  pila: encodeAuthKeyExchangeFrame({
    node: nodeId,
    x25519: keyPair.publicKey,
    ed25519: identity.publicKey,
    signature: signKeyExchange(identity, nodeId, keyPair.publicKey)
  }),
  pilk: encodeKeyExchangeFrame({ node: nodeId, x25519: keyPair.publicKey })
})

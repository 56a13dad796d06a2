/**
 * Ed25519 signatures: the node identity signs registry challenges (`heartbeat:<id>`, `rotate:<id>`, …,
 * reference §6 / Appendix A) and the 40-byte PILA key-exchange challenge (reference §4.1).
 *
 * Built on `node:crypto` because Ed25519 there is 10-30× faster than `@noble/curves` on this machine
 * (DESIGN.md §8; `bench/aead.ts` measures it again). Verification is total: every malformed input
 * (wrong key or signature length, bad base64, a key OpenSSL refuses) is simply "not valid" — the inputs
 * come from the network.
 */
import { createPublicKey, KeyObject, sign, verify } from "node:crypto"
import { decodeBase64 } from "./base64.ts"
import { asBuffer } from "./bytes.ts"

export const ED25519_PUBLIC_KEY_LENGTH = 32
export const ED25519_SEED_LENGTH = 32
export const ED25519_SIGNATURE_LENGTH = 64

/** A public key as raw 32 bytes or as an already-imported key object (cheaper when verifying often). */
export type Ed25519PublicKey = Uint8Array | KeyObject

/** Imports a raw 32-byte Ed25519 public key; `undefined` when OpenSSL refuses it (e.g. wrong length). */
export const importEd25519PublicKey = (raw: Uint8Array): KeyObject | undefined => {
  if (raw.byteLength !== ED25519_PUBLIC_KEY_LENGTH) return undefined
  try {
    return createPublicKey({ key: asBuffer(raw), format: "raw-public", asymmetricKeyType: "ed25519" })
  } catch {
    return undefined
  }
}

/** Strict decode of the registry's base64 public-key form (`lookup.public_key`, `register.public_key`). */
export const decodeEd25519PublicKey = (base64: string): Uint8Array | undefined => {
  const raw = decodeBase64(base64)
  return raw !== undefined && raw.byteLength === ED25519_PUBLIC_KEY_LENGTH ? raw : undefined
}

/** Pure Ed25519 (no pre-hash, hence the `null` digest) over `message`. */
export const signEd25519 = (privateKey: KeyObject, message: Uint8Array): Uint8Array => sign(null, message, privateKey)

export const verifyEd25519 = (publicKey: Ed25519PublicKey, message: Uint8Array, signature: Uint8Array): boolean => {
  if (signature.byteLength !== ED25519_SIGNATURE_LENGTH) return false
  const key = publicKey instanceof KeyObject ? publicKey : importEd25519PublicKey(publicKey)
  if (key === undefined || key.asymmetricKeyType !== "ed25519") return false
  try {
    return verify(null, message, key, signature)
  } catch {
    return false
  }
}

const utf8 = new TextEncoder()

/** The bytes a text challenge such as `heartbeat:42` is signed as (UTF-8, no terminator — as Go's `[]byte(s)`). */
export const challengeBytes = (challenge: string): Uint8Array => utf8.encode(challenge)

/** Verifies a registry-style signature: standard base64 Ed25519 signature over a UTF-8 challenge string. */
export const verifyChallenge = (publicKey: Ed25519PublicKey, challenge: string, signatureBase64: string): boolean => {
  const signature = decodeBase64(signatureBase64)
  return signature !== undefined && verifyEd25519(publicKey, challengeBytes(challenge), signature)
}

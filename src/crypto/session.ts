/**
 * Tunnel session crypto (reference §4.1-§4.2): X25519 key agreement, HKDF-SHA256 key derivation,
 * AES-256-GCM sealing of PILS frames, and the Ed25519 signature that authenticates a key exchange (PILA).
 *
 * - key   = HKDF-SHA256(ikm = X25519 shared secret, salt = empty, info = `pilot-tunnel-v1`, 32 bytes).
 *           The same key serves both directions.
 * - nonce = 4-byte random prefix, picked anew on every derivation (our *send epoch*) ‖ 8-byte big-endian
 *           counter, incremented before use so the first frame carries 1. Each side draws its own prefix,
 *           so the two directions (and successive derivations) use disjoint nonces under the shared key
 *           unless two 32-bit random prefixes collide — the same margin as the Go implementation.
 * - AAD   = the sender's node ID, 4 bytes big-endian (the same ID the PILS header carries in the clear).
 * - sealed = ciphertext ‖ 16-byte tag, i.e. the PILS frame minus `magic ‖ sender ‖ nonce`.
 *
 * Why `node:crypto` with one `createSecretKey` key object per session (`npx node bench/aead.ts`, ratios
 * measured in one interleaved run): seal+open of a 1200-byte packet with a raw Buffer key costs ~4× the
 * key-object cost (Node re-imports the key on every `createCipheriv`), `@noble/ciphers` ~20× (7× at 64
 * bytes, 40× at 4 KiB); X25519 and Ed25519 are 13-20× faster in `node:crypto` than in `@noble/curves`.
 * Absolute numbers drift with the VM's throttling (DESIGN.md §8); docs/PERFORMANCE.md has a full table.
 */
import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomFillSync
} from "node:crypto"
import { Buffer } from "node:buffer"
import { Result } from "effect"
import { asBuffer } from "./bytes.ts"
import type { Identity } from "./identity.ts"
import type { AuthenticatedNonce } from "./replay.ts"
import { type Ed25519PublicKey, verifyEd25519 } from "./signing.ts"

export const X25519_KEY_LENGTH = 32
export const SESSION_KEY_LENGTH = 32
export const NONCE_LENGTH = 12
export const NONCE_PREFIX_LENGTH = 4
export const TAG_LENGTH = 16
/** HKDF `info` of the new KDF (reference §4.2). Peers on the old SHA-256 KDF cannot talk to us. */
export const TUNNEL_KDF_INFO = "pilot-tunnel-v1"

const CIPHER = "aes-256-gcm"
const GCM_OPTIONS = { authTagLength: TAG_LENGTH } as const
const EMPTY_SALT = new Uint8Array(0)
const TWO_POW_32 = 0x1_0000_0000

// ---------------------------------------------------------------------------------------------------------
// X25519

export interface TunnelKeyPair {
  readonly publicKey: Uint8Array
  readonly privateKey: KeyObject
}

const keyPairOf = (privateKey: KeyObject): TunnelKeyPair => ({
  privateKey,
  publicKey: createPublicKey(privateKey).export({ format: "raw-public" })
})

/** A fresh in-memory X25519 key pair (the daemon makes one per start, reference §2). */
export const generateTunnelKeyPair = (): TunnelKeyPair => keyPairOf(generateKeyPairSync("x25519").privateKey)

/** From a 32-byte X25519 secret (a persisted tunnel key, or a test vector); RFC 7748 clamping applies. */
export const tunnelKeyPairFromSecret = (secret: Uint8Array): TunnelKeyPair =>
  keyPairOf(createPrivateKey({ key: asBuffer(secret), format: "raw-private", asymmetricKeyType: "x25519" }))

/**
 * Why a peer's X25519 public key was refused: not 32 bytes, or a low-order point (the shared secret would
 * be all zeros — OpenSSL refuses to derive it, as Go's `curve25519.X25519` does).
 */
export type KeyAgreementFailure = "invalid_public_key" | "low_order_point"

/** The raw X25519 shared secret; the caller owns it and must zero it. */
export const x25519SharedSecret = (
  ours: KeyObject,
  peerPublicKey: Uint8Array
): Result.Result<Uint8Array, KeyAgreementFailure> => {
  if (peerPublicKey.byteLength !== X25519_KEY_LENGTH) return Result.fail("invalid_public_key")
  let peer: KeyObject
  try {
    peer = createPublicKey({ key: asBuffer(peerPublicKey), format: "raw-public", asymmetricKeyType: "x25519" })
  } catch {
    return Result.fail("invalid_public_key")
  }
  try {
    return Result.succeed(diffieHellman({ privateKey: ours, publicKey: peer }))
  } catch {
    return Result.fail("low_order_point")
  }
}

// ---------------------------------------------------------------------------------------------------------
// Session keys and AEAD

/** One sealed frame: the nonce to put in the PILS header and `ciphertext ‖ tag`. */
export interface SealedFrame {
  readonly nonce: Uint8Array
  readonly sealed: Uint8Array
}

/** A successfully opened frame; `nonce` goes to `ReplayGuard.admit` next (replay.ts). */
export interface OpenedFrame {
  readonly plaintext: Uint8Array
  readonly nonce: AuthenticatedNonce
}

/**
 * Why a frame did not open. Plain strings, not error objects: a flood of forged frames must not cost a
 * stack trace each. `malformed` = nonce not 12 bytes or fewer than 16 sealed bytes; `auth_failed` = the
 * tag did not verify (wrong key, wrong sender ID, or any modified bit).
 */
export type OpenFailure = "malformed" | "auth_failed"

const readUint32 = (bytes: Uint8Array, offset: number): number =>
  ((bytes[offset]! << 24) | (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!) >>> 0

const writeUint32 = (bytes: Uint8Array, offset: number, value: number): void => {
  bytes[offset] = value >>> 24
  bytes[offset + 1] = value >>> 16
  bytes[offset + 2] = value >>> 8
  bytes[offset + 3] = value
}

/**
 * The keys of one tunnel session with one peer: the AES key object, our send-epoch prefix and our send
 * counter. Create with `deriveSessionKeys`; a re-derivation is a new `SessionKeys` with a new prefix.
 */
export class SessionKeys {
  readonly #key: KeyObject
  readonly #prefix: Uint8Array
  #sendCounter = 0
  // Scratch for the 4-byte AAD: setAAD copies it into the cipher context, so one buffer per session is safe.
  readonly #aad = new Uint8Array(4)

  private constructor(key: KeyObject, prefix: Uint8Array) {
    this.#key = key
    this.#prefix = prefix
  }

  /**
   * Builds a session around raw key bytes, with a fresh random prefix. The caller owns `keyBytes` and
   * should zero it; the key object keeps its own copy.
   */
  static fromKeyBytes(keyBytes: Uint8Array): SessionKeys {
    const prefix = new Uint8Array(NONCE_PREFIX_LENGTH)
    randomFillSync(prefix)
    return new SessionKeys(createSecretKey(keyBytes), prefix)
  }

  /** Our send epoch: the nonce prefix as a big-endian u32 (what the peer's `ReplayGuard` keys on). */
  get sendEpoch(): number {
    return readUint32(this.#prefix, 0)
  }

  /** The counter of the last frame sealed (0 before the first). */
  get sendCounter(): number {
    return this.#sendCounter
  }

  seal(plaintext: Uint8Array, senderNodeId: number): SealedFrame {
    // 2^53 frames is ~285 years at a million frames a second: reaching it is a bug, not an input.
    if (this.#sendCounter >= Number.MAX_SAFE_INTEGER) throw new RangeError("tunnel send counter exhausted")
    const counter = ++this.#sendCounter
    const nonce = new Uint8Array(NONCE_LENGTH)
    nonce.set(this.#prefix)
    writeUint32(nonce, 4, Math.floor(counter / TWO_POW_32))
    writeUint32(nonce, 8, counter % TWO_POW_32)
    writeUint32(this.#aad, 0, senderNodeId)
    const cipher = createCipheriv(CIPHER, this.#key, nonce, GCM_OPTIONS)
    cipher.setAAD(this.#aad)
    const ciphertext = cipher.update(plaintext)
    cipher.final() // GCM is a stream mode: final() emits nothing, it computes the tag
    // allocUnsafe draws from Node's pool: ~5× cheaper than a fresh ArrayBuffer at this size, and every
    // byte is overwritten (it took bench/aead.ts row (d) from ~1.4× to ~1.1-1.2× the bare primitive).
    const sealed = Buffer.allocUnsafe(ciphertext.byteLength + TAG_LENGTH)
    sealed.set(ciphertext)
    sealed.set(cipher.getAuthTag(), ciphertext.byteLength)
    return { nonce, sealed }
  }

  /**
   * Opens `ciphertext ‖ tag`. Never throws. Only frames whose tag verified come back, with their nonce
   * branded `AuthenticatedNonce` for the replay check, which must come after this (replay.ts).
   */
  open(nonce: Uint8Array, sealed: Uint8Array, senderNodeId: number): Result.Result<OpenedFrame, OpenFailure> {
    if (nonce.byteLength !== NONCE_LENGTH || sealed.byteLength < TAG_LENGTH) return Result.fail("malformed")
    const ciphertextLength = sealed.byteLength - TAG_LENGTH
    writeUint32(this.#aad, 0, senderNodeId)
    const decipher = createDecipheriv(CIPHER, this.#key, nonce, GCM_OPTIONS)
    decipher.setAAD(this.#aad)
    decipher.setAuthTag(sealed.subarray(ciphertextLength))
    const plaintext = decipher.update(sealed.subarray(0, ciphertextLength))
    try {
      decipher.final()
    } catch {
      return Result.fail("auth_failed")
    }
    // The one place an AuthenticatedNonce is minted: the tag over this nonce has just verified.
    const authenticated = {
      epoch: readUint32(nonce, 0),
      counter: readUint32(nonce, 4) * TWO_POW_32 + readUint32(nonce, 8)
    } as AuthenticatedNonce
    return Result.succeed({ plaintext, nonce: authenticated })
  }
}

/** key = HKDF-SHA256(shared, empty salt, `pilot-tunnel-v1`, 32). The caller owns and zeroes `shared`. */
const deriveKeyBytes = (shared: Uint8Array): Uint8Array =>
  new Uint8Array(hkdfSync("sha256", shared, EMPTY_SALT, TUNNEL_KDF_INFO, SESSION_KEY_LENGTH))

/**
 * X25519 with the peer's public key, then HKDF into a new session with a fresh send prefix. The shared
 * secret and the raw key bytes are zeroed before returning (HKDF's internal PRK lives in OpenSSL).
 */
export const deriveSessionKeys = (
  ours: KeyObject,
  peerPublicKey: Uint8Array
): Result.Result<SessionKeys, KeyAgreementFailure> =>
  Result.map(x25519SharedSecret(ours, peerPublicKey), (shared) => {
    const keyBytes = deriveKeyBytes(shared)
    shared.fill(0)
    const keys = SessionKeys.fromKeyBytes(keyBytes)
    keyBytes.fill(0)
    return keys
  })

// ---------------------------------------------------------------------------------------------------------
// PILA: the signed key exchange

export const KEY_EXCHANGE_CHALLENGE_LENGTH = 40
const CHALLENGE_TAG = new TextEncoder().encode("auth") // no colon, whatever old comments say (reference §4.1)

/** The 40 signed bytes of a PILA frame: `auth` ‖ sender node ID (u32 BE) ‖ sender X25519 public key. */
export const keyExchangeChallenge = (nodeId: number, x25519PublicKey: Uint8Array): Uint8Array => {
  const challenge = new Uint8Array(KEY_EXCHANGE_CHALLENGE_LENGTH)
  challenge.set(CHALLENGE_TAG)
  writeUint32(challenge, 4, nodeId)
  challenge.set(x25519PublicKey.subarray(0, X25519_KEY_LENGTH), 8)
  return challenge
}

/** Our PILA signature over our node ID and tunnel public key. */
export const signKeyExchange = (identity: Identity, nodeId: number, x25519PublicKey: Uint8Array): Uint8Array =>
  identity.sign(keyExchangeChallenge(nodeId, x25519PublicKey))

/**
 * Checks a peer's PILA signature. `identityKey` must be the key the registry holds for `nodeId`, not the
 * one carried in the frame (reference §4.1): the frame's copy proves nothing.
 */
export const verifyKeyExchange = (
  identityKey: Ed25519PublicKey,
  nodeId: number,
  x25519PublicKey: Uint8Array,
  signature: Uint8Array
): boolean =>
  x25519PublicKey.byteLength === X25519_KEY_LENGTH &&
  verifyEd25519(identityKey, keyExchangeChallenge(nodeId, x25519PublicKey), signature)

import { createCipheriv, createDecipheriv, createHmac, type KeyObject } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import * as fc from "fast-check"
import { Identity } from "../../src/crypto/identity.ts"
import {
  deriveSessionKeys,
  generateTunnelKeyPair,
  keyExchangeChallenge,
  type SessionKeys,
  signKeyExchange,
  TAG_LENGTH,
  verifyKeyExchange,
  x25519SharedSecret
} from "../../src/crypto/session.ts"

const bytes = (s: string) => new TextEncoder().encode(s)
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex")

/** Both ends of one tunnel, each deriving from its own private key and the other's public key. */
const pair = () => {
  const alice = generateTunnelKeyPair()
  const bob = generateTunnelKeyPair()
  return {
    alice,
    bob,
    aliceKeys: Result.getOrThrow(deriveSessionKeys(alice.privateKey, bob.publicKey)),
    bobKeys: Result.getOrThrow(deriveSessionKeys(bob.privateKey, alice.publicKey))
  }
}

/** The tunnel key computed the way reference §4.2 spells out the Go construction, independently of session.ts. */
const referenceKey = (ours: KeyObject, peerPublicKey: Uint8Array) => {
  const shared = Result.getOrThrow(x25519SharedSecret(ours, peerPublicKey))
  const prk = createHmac("sha256", new Uint8Array(0)).update(shared).digest()
  return createHmac("sha256", prk).update(Buffer.concat([Buffer.from("pilot-tunnel-v1"), Buffer.of(1)])).digest()
}

const openOrThrow = (keys: SessionKeys, nonce: Uint8Array, sealed: Uint8Array, sender: number) =>
  Result.getOrThrow(keys.open(nonce, sealed, sender))

describe("session key derivation", () => {
  it("matches the reference KDF computed by hand: HMAC(HMAC(empty key, shared), info ‖ 0x01)", () => {
    // Reference §4.2 spells the Go construction out; decrypting our frame with that key, the nonce layout
    // prefix ‖ BE counter and AAD = BE sender ID proves the whole composition, not just the round trip.
    const { alice, bob, aliceKeys } = pair()
    const key = referenceKey(alice.privateKey, bob.publicKey)

    const { nonce, sealed } = aliceKeys.seal(bytes("hello"), 0x01020304)
    const expectedNonce = Buffer.alloc(12)
    expectedNonce.writeUInt32BE(aliceKeys.sendEpoch, 0)
    expectedNonce.writeBigUInt64BE(1n, 4)
    expect(hex(nonce)).toBe(hex(expectedNonce))

    const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 })
    decipher.setAAD(Buffer.of(1, 2, 3, 4))
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_LENGTH))
    const plaintext = Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG_LENGTH)), decipher.final()])
    expect(plaintext.toString()).toBe("hello")
  })

  it("both directions derive the same key from swapped key pairs", () => {
    const { aliceKeys, bobKeys } = pair()
    const fromAlice = aliceKeys.seal(bytes("a→b"), 1)
    const fromBob = bobKeys.seal(bytes("b→a"), 2)
    expect(Buffer.from(openOrThrow(bobKeys, fromAlice.nonce, fromAlice.sealed, 1).plaintext).toString()).toBe("a→b")
    expect(Buffer.from(openOrThrow(aliceKeys, fromBob.nonce, fromBob.sealed, 2).plaintext).toString()).toBe("b→a")
  })

  it("picks a fresh send prefix on every derivation, even from the same key pairs", () => {
    const alice = generateTunnelKeyPair()
    const bob = generateTunnelKeyPair()
    const epochs = new Set<number>()
    for (let i = 0; i < 16; i++) epochs.add(Result.getOrThrow(deriveSessionKeys(alice.privateKey, bob.publicKey)).sendEpoch)
    expect(epochs.size).toBe(16)
  })

  it("refuses a peer key of the wrong length and low-order points", () => {
    const ours = generateTunnelKeyPair().privateKey
    expect(deriveSessionKeys(ours, new Uint8Array(31))).toEqual(Result.fail("invalid_public_key"))
    expect(deriveSessionKeys(ours, new Uint8Array(32))).toEqual(Result.fail("low_order_point")) // u = 0
    const one = new Uint8Array(32)
    one[0] = 1
    expect(deriveSessionKeys(ours, one)).toEqual(Result.fail("low_order_point")) // u = 1
  })
})

describe("seal / open", () => {
  it("round-trips payloads of any size, including empty", () => {
    const { aliceKeys, bobKeys } = pair()
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.nat({ max: 0xffff_ffff }), (payload, sender) => {
        const { nonce, sealed } = aliceKeys.seal(payload, sender)
        expect(sealed.length).toBe(payload.length + TAG_LENGTH)
        expect(hex(openOrThrow(bobKeys, nonce, sealed, sender).plaintext)).toBe(hex(payload))
      }),
      { numRuns: 300 }
    )
  })

  it("the nonce counter starts at 1 and increments per frame under a constant prefix", () => {
    const { aliceKeys, bobKeys } = pair()
    expect(aliceKeys.sendCounter).toBe(0)
    for (const expected of [1, 2, 3]) {
      const { nonce, sealed } = aliceKeys.seal(bytes("x"), 9)
      const view = Buffer.from(nonce)
      expect(view.readUInt32BE(0)).toBe(aliceKeys.sendEpoch)
      expect(view.readBigUInt64BE(4)).toBe(BigInt(expected))
      expect(aliceKeys.sendCounter).toBe(expected)
      expect(openOrThrow(bobKeys, nonce, sealed, 9).nonce).toEqual({ epoch: aliceKeys.sendEpoch, counter: expected })
    }
  })

  it("reads the full 64-bit big-endian counter of a peer's nonce", () => {
    const { alice, bob, bobKeys } = pair()
    const counter = 2 ** 40 + 5 // above 2^32: both halves of the counter matter
    const nonce = Buffer.alloc(12)
    nonce.writeUInt32BE(0xfeedbeef, 0)
    nonce.writeBigUInt64BE(BigInt(counter), 4)
    const cipher = createCipheriv("aes-256-gcm", referenceKey(alice.privateKey, bob.publicKey), nonce, { authTagLength: 16 })
    cipher.setAAD(Buffer.of(0, 0, 0, 9))
    const sealed = Buffer.concat([cipher.update(Buffer.from("far")), cipher.final(), cipher.getAuthTag()])
    expect(openOrThrow(bobKeys, nonce, sealed, 9).nonce).toEqual({ epoch: 0xfeedbeef, counter })
  })

  it("fails authentication under another sender node ID (the AAD)", () => {
    const { aliceKeys, bobKeys } = pair()
    const { nonce, sealed } = aliceKeys.seal(bytes("from node 5"), 5)
    expect(bobKeys.open(nonce, sealed, 6)).toEqual(Result.fail("auth_failed"))
    expect(Result.isSuccess(bobKeys.open(nonce, sealed, 5))).toBe(true)
  })

  it("fails authentication when any single bit of nonce, ciphertext or tag is flipped", () => {
    const { aliceKeys, bobKeys } = pair()
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 256 }), fc.nat(), fc.nat({ max: 7 }), (payload, at, bit) => {
        const { nonce, sealed } = aliceKeys.seal(payload, 3)
        const frame = Buffer.concat([nonce, sealed]) // flip anywhere in nonce ‖ ciphertext ‖ tag
        const index = at % frame.length
        frame[index]! ^= 1 << bit
        expect(bobKeys.open(frame.subarray(0, 12), frame.subarray(12), 3)).toEqual(Result.fail("auth_failed"))
      }),
      { numRuns: 300 }
    )
  })

  it("fails authentication under a different session key", () => {
    const first = pair()
    const second = pair()
    const { nonce, sealed } = first.aliceKeys.seal(bytes("x"), 1)
    expect(second.bobKeys.open(nonce, sealed, 1)).toEqual(Result.fail("auth_failed"))
  })

  it("reports malformed input instead of throwing", () => {
    const { aliceKeys, bobKeys } = pair()
    const { nonce, sealed } = aliceKeys.seal(bytes("x"), 1)
    expect(bobKeys.open(nonce.subarray(0, 11), sealed, 1)).toEqual(Result.fail("malformed"))
    expect(bobKeys.open(nonce, sealed.subarray(0, TAG_LENGTH - 1), 1)).toEqual(Result.fail("malformed"))
    expect(bobKeys.open(nonce, new Uint8Array(TAG_LENGTH), 1)).toEqual(Result.fail("auth_failed"))
  })
})

describe("PILA key-exchange signature", () => {
  it("signs the 40-byte challenge 'auth' ‖ node ID (BE) ‖ X25519 public key", () => {
    const x25519 = generateTunnelKeyPair().publicKey
    const challenge = keyExchangeChallenge(0x0a0b0c0d, x25519)
    expect(challenge.length).toBe(40)
    expect(hex(challenge)).toBe(Buffer.from("auth").toString("hex") + "0a0b0c0d" + hex(x25519))
  })

  it("verifies against the signer's identity key only, and only for the same node ID and X25519 key", () => {
    const identity = Identity.generate()
    const stranger = Identity.generate()
    const x25519 = generateTunnelKeyPair().publicKey
    const signature = signKeyExchange(identity, 77, x25519)
    expect(verifyKeyExchange(identity.publicKey, 77, x25519, signature)).toBe(true)
    expect(verifyKeyExchange(stranger.publicKey, 77, x25519, signature)).toBe(false)
    expect(verifyKeyExchange(identity.publicKey, 78, x25519, signature)).toBe(false)
    expect(verifyKeyExchange(identity.publicKey, 77, generateTunnelKeyPair().publicKey, signature)).toBe(false)
    expect(verifyKeyExchange(identity.publicKey, 77, x25519.subarray(0, 31), signature)).toBe(false)
    expect(verifyKeyExchange(identity.publicKey, 77, x25519, signature.subarray(0, 63))).toBe(false)
  })
})

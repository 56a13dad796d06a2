/**
 * Known-answer tests from the RFCs and the GCM specification, run through the same code paths the tunnel
 * uses (our X25519 and Ed25519 wrappers; the `node:crypto` HKDF and AES-256-GCM primitives session.ts
 * composes).
 */
import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync } from "node:crypto"
import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import { Identity } from "../../src/crypto/identity.ts"
import { tunnelKeyPairFromSecret, x25519SharedSecret } from "../../src/crypto/session.ts"

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ""), "hex"))
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex")

/** X25519(k, u) through our wrapper: k imported as a private key, u as the peer's public key. */
const x25519 = (k: Uint8Array, u: Uint8Array): Uint8Array =>
  Result.getOrThrow(x25519SharedSecret(tunnelKeyPairFromSecret(k).privateKey, u))

describe("RFC 7748 X25519", () => {
  it("§5.2 test vector 1", () => {
    const out = x25519(
      hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
      hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    )
    expect(toHex(out)).toBe("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
  })

  it("§5.2 test vector 2 (u with the high bit set, which must be masked)", () => {
    const out = x25519(
      hex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
      hex("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")
    )
    expect(toHex(out)).toBe("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")
  })

  it("§5.2 iterated: 1 and 1000 iterations", () => {
    let k = hex("0900000000000000000000000000000000000000000000000000000000000000")
    let u = k
    const results = new Map<number, string>()
    for (let i = 1; i <= 1000; i++) {
      const next = x25519(k, u)
      u = k
      k = next
      if (i === 1 || i === 1000) results.set(i, toHex(k))
    }
    expect(results.get(1)).toBe("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
    expect(results.get(1000)).toBe("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
  })

  it("§6.1 Diffie-Hellman: public keys and the shared secret from both sides", () => {
    const alice = tunnelKeyPairFromSecret(hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    const bob = tunnelKeyPairFromSecret(hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    expect(toHex(alice.publicKey)).toBe("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    expect(toHex(bob.publicKey)).toBe("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    const shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    expect(toHex(Result.getOrThrow(x25519SharedSecret(alice.privateKey, bob.publicKey)))).toBe(shared)
    expect(toHex(Result.getOrThrow(x25519SharedSecret(bob.privateKey, alice.publicKey)))).toBe(shared)
  })
})

describe("RFC 8032 §7.1 Ed25519", () => {
  const vectors = [
    {
      name: "TEST 1 (empty message)",
      secret: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
      publicKey: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
      message: "",
      signature: "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    },
    {
      name: "TEST 2 (one byte)",
      secret: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
      publicKey: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
      message: "72",
      signature: "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
    },
    {
      name: "TEST 3 (two bytes)",
      secret: "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
      publicKey: "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
      message: "af82",
      signature: "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
    }
  ]
  for (const v of vectors) {
    it(`${v.name}: public key from secret, deterministic signature`, () => {
      const identity = Identity.fromSeed(hex(v.secret))
      expect(toHex(identity.publicKey)).toBe(v.publicKey)
      expect(toHex(identity.sign(hex(v.message)))).toBe(v.signature)
    })
  }
})

describe("RFC 5869 HKDF-SHA256 (the primitive behind the tunnel KDF)", () => {
  const ikm = hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")

  it("test case 1 (salt and info)", () => {
    const okm = hkdfSync("sha256", ikm, hex("000102030405060708090a0b0c"), hex("f0f1f2f3f4f5f6f7f8f9"), 42)
    expect(toHex(new Uint8Array(okm))).toBe(
      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
  })

  it("test case 3 (empty salt and info: the salt the tunnel KDF uses)", () => {
    const okm = hkdfSync("sha256", ikm, new Uint8Array(0), new Uint8Array(0), 42)
    expect(toHex(new Uint8Array(okm))).toBe(
      "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
  })
})

describe("AES-256-GCM (McGrew & Viega, 'The GCM mode of operation', test cases 14 and 16)", () => {
  const seal = (key: string, iv: string, plaintext: string, aad: string) => {
    const cipher = createCipheriv("aes-256-gcm", createSecretKey(hex(key)), hex(iv), { authTagLength: 16 })
    cipher.setAAD(hex(aad))
    const ciphertext = Buffer.concat([cipher.update(hex(plaintext)), cipher.final()])
    return { ciphertext: toHex(ciphertext), tag: toHex(cipher.getAuthTag()) }
  }

  it("test case 14: zero key, one zero block, no AAD", () => {
    expect(seal("00".repeat(32), "00".repeat(12), "00".repeat(16), "")).toEqual({
      ciphertext: "cea7403d4d606b6e074ec5d3baf39d18",
      tag: "d0d1c8a799996bf0265b98b5d48ab919"
    })
  })

  const tc16 = {
    key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
    iv: "cafebabefacedbaddecaf888",
    plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
    ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
    tag: "76fc6ece0f4e1768cddf8853bb2d551b"
  }

  it("test case 16: 60-byte plaintext with 20 bytes of AAD", () => {
    expect(seal(tc16.key, tc16.iv, tc16.plaintext, tc16.aad)).toEqual({ ciphertext: tc16.ciphertext, tag: tc16.tag })
  })

  it("test case 16 decrypts, and refuses a modified AAD", () => {
    const open = (aad: string) => {
      const decipher = createDecipheriv("aes-256-gcm", createSecretKey(hex(tc16.key)), hex(tc16.iv), { authTagLength: 16 })
      decipher.setAAD(hex(aad))
      decipher.setAuthTag(hex(tc16.tag))
      return toHex(Buffer.concat([decipher.update(hex(tc16.ciphertext)), decipher.final()]))
    }
    expect(open(tc16.aad)).toBe(tc16.plaintext)
    expect(() => open(tc16.aad.replace(/^fe/, "ff"))).toThrow()
  })
})

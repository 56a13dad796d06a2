import { inspect } from "node:util"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, expect, it } from "@effect/vitest"
import { Effect, FileSystem, Path, Result } from "effect"
import { encodeBase64 } from "../../src/crypto/base64.ts"
import {
  decodeIdentityFile,
  encodeIdentityFile,
  Identity,
  IdentityError,
  loadOrCreateIdentity
} from "../../src/crypto/identity.ts"
import { decodeEd25519PublicKey, verifyChallenge, verifyEd25519 } from "../../src/crypto/signing.ts"

const hex = (s: string) => Uint8Array.from(Buffer.from(s, "hex"))

/** A fresh directory removed with the test's scope, plus the file system to inspect it with. */
const workspace = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "pilotfish-identity-" })
  return { fs, dir, file: (...parts: Array<string>) => path.join(dir, ...parts) }
})

const modeOf = (fs: FileSystem.FileSystem, file: string) => Effect.map(fs.stat(file), (info) => info.mode & 0o777)

/** Runs loadOrCreateIdentity expecting a typed failure; returns it. */
const loadFailure = (file: string) =>
  Effect.flip(loadOrCreateIdentity(file)).pipe(
    Effect.tap((error) => Effect.sync(() => assert.instanceOf(error, IdentityError)))
  )

/** Go's on-disk form for a given seed and public key, as a Go daemon would write it. */
const goFile = (seed: Uint8Array, publicKey: Uint8Array, privatePublicHalf = publicKey) =>
  JSON.stringify({
    private_key: encodeBase64(Uint8Array.from([...seed, ...privatePublicHalf])),
    public_key: encodeBase64(publicKey)
  })

// RFC 8032 §7.1 TEST 1
const RFC_SEED = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
const RFC_PUBLIC = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")

describe("loadOrCreateIdentity", () => {
  it.effect("creates a key pair on first start (file 0600, new directories 0700) and loads the same one later", () =>
    Effect.gen(function*() {
      const { file, fs } = yield* workspace
      const path = file("state", ".pilot", "identity.json")
      const created = yield* loadOrCreateIdentity(path)
      expect(yield* modeOf(fs, path)).toBe(0o600)
      expect(yield* modeOf(fs, file("state", ".pilot"))).toBe(0o700)
      expect(yield* modeOf(fs, file("state"))).toBe(0o700)
      expect(yield* fs.readDirectory(file("state", ".pilot"))).toEqual(["identity.json"]) // no temp file left

      const loaded = yield* loadOrCreateIdentity(path)
      expect(loaded.publicKeyBase64).toBe(created.publicKeyBase64)
      const message = new TextEncoder().encode("same key")
      expect(verifyEd25519(created.publicKey, message, loaded.sign(message))).toBe(true)
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("loads a file in Go's format (64-byte seed ‖ public private key)", () =>
    Effect.gen(function*() {
      const { file, fs } = yield* workspace
      const path = file("identity.json")
      yield* fs.writeFileString(path, goFile(RFC_SEED, RFC_PUBLIC))
      const identity = yield* loadOrCreateIdentity(path)
      expect(Buffer.from(identity.publicKey).toString("hex")).toBe(Buffer.from(RFC_PUBLIC).toString("hex"))
      expect(Buffer.from(identity.sign(new Uint8Array(0))).toString("hex")).toBe(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
      )
    }).pipe(Effect.provide(NodeServices.layer)))

  const broken: ReadonlyArray<{ name: string; content: () => string; code: string }> = [
    { name: "not JSON", content: () => "{\"private_key\": ", code: "identity_corrupt" },
    { name: "a missing field", content: () => JSON.stringify({ public_key: encodeBase64(RFC_PUBLIC) }), code: "identity_corrupt" },
    {
      name: "invalid base64",
      content: () => goFile(RFC_SEED, RFC_PUBLIC).replace(/"public_key":"/, "\"public_key\":\"!"),
      code: "identity_corrupt"
    },
    {
      name: "a 32-byte private key",
      content: () => JSON.stringify({ private_key: encodeBase64(RFC_SEED), public_key: encodeBase64(RFC_PUBLIC) }),
      code: "identity_corrupt"
    },
    {
      name: "another node's public key",
      content: () => goFile(RFC_SEED, Identity.generate().publicKey, RFC_PUBLIC),
      code: "identity_mismatch"
    },
    {
      name: "a private key whose public half disagrees",
      content: () => goFile(RFC_SEED, RFC_PUBLIC, Identity.generate().publicKey),
      code: "identity_mismatch"
    }
  ]
  for (const { code, content, name } of broken) {
    it.effect(`refuses a file with ${name} as ${code}, with a hint, and never rewrites it`, () =>
      Effect.gen(function*() {
        const { file, fs } = yield* workspace
        const path = file("identity.json")
        const text = content()
        yield* fs.writeFileString(path, text)
        const error = yield* loadFailure(path)
        expect(error.code).toBe(code)
        expect(error.hint).toContain(path)
        expect(error.hint).toContain("node ID")
        expect(error.message).not.toContain(encodeBase64(RFC_SEED).slice(0, 12)) // no key material in logs
        expect(yield* fs.readFileString(path)).toBe(text)
        expect(yield* fs.readDirectory(file())).toEqual(["identity.json"])
      }).pipe(Effect.provide(NodeServices.layer)))
  }

  it.effect("reports a path it cannot read as identity_unreadable and creates nothing", () =>
    Effect.gen(function*() {
      const { file, fs } = yield* workspace
      const path = file("identity.json")
      yield* fs.makeDirectory(path)
      const error = yield* loadFailure(path)
      expect(error.code).toBe("identity_unreadable")
      expect(yield* fs.readDirectory(path)).toEqual([])
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("reports a path it cannot create as identity_unwritable", () =>
    Effect.gen(function*() {
      const { file, fs } = yield* workspace
      // Tests may run as root, so permissions cannot make a write fail. A 250-byte name can be looked up
      // (ENOENT: "missing, create it") but the atomic write's temp file name exceeds NAME_MAX (255).
      const path = file("i".repeat(250))
      const error = yield* loadFailure(path)
      expect(error.code).toBe("identity_unwritable")
      expect(yield* fs.readDirectory(file())).toEqual([])
    }).pipe(Effect.provide(NodeServices.layer)))
})

describe("identity file codec", () => {
  it("round-trips through the Go format", () => {
    const identity = Identity.generate()
    const text = encodeIdentityFile(identity)
    const fields = JSON.parse(text) as { private_key: string; public_key: string }
    expect(Buffer.from(fields.private_key, "base64").length).toBe(64)
    expect(fields.public_key).toBe(identity.publicKeyBase64)
    const decoded = Result.getOrThrow(decodeIdentityFile("x", text))
    expect(decoded.publicKeyBase64).toBe(identity.publicKeyBase64)
  })

  it("keeps the private key out of inspection and JSON", () => {
    const identity = Identity.fromSeed(RFC_SEED)
    const seedB64 = encodeBase64(RFC_SEED)
    expect(JSON.stringify(identity)).not.toContain(seedB64)
    expect(inspect(identity, { showHidden: true, depth: 5 })).not.toMatch(/9d ?61 ?b1 ?9d/) // the seed's first bytes
    expect(Object.keys(identity).sort()).toEqual(["publicKey", "publicKeyBase64"])
  })
})

describe("registry signatures", () => {
  it("signChallenge gives a base64 signature over the UTF-8 challenge that verifyChallenge accepts", () => {
    const identity = Identity.generate()
    const signature = identity.signChallenge("heartbeat:42")
    const publicKey = decodeEd25519PublicKey(identity.publicKeyBase64)
    assert(publicKey !== undefined)
    expect(verifyChallenge(publicKey, "heartbeat:42", signature)).toBe(true)
    expect(verifyChallenge(publicKey, "heartbeat:43", signature)).toBe(false)
    expect(verifyChallenge(Identity.generate().publicKey, "heartbeat:42", signature)).toBe(false)
    expect(verifyChallenge(publicKey, "heartbeat:42", `${signature.slice(0, -2)}@=`)).toBe(false)
    expect(verifyChallenge(publicKey, "heartbeat:42", "")).toBe(false)
  })

  it("decodes only canonical 32-byte base64 public keys", () => {
    const identity = Identity.generate()
    expect(decodeEd25519PublicKey(identity.publicKeyBase64)).toEqual(identity.publicKey)
    expect(decodeEd25519PublicKey(identity.publicKeyBase64.replace(/=$/, ""))).toBeUndefined() // unpadded
    expect(decodeEd25519PublicKey(` ${identity.publicKeyBase64}`)).toBeUndefined()
    expect(decodeEd25519PublicKey(encodeBase64(new Uint8Array(31)))).toBeUndefined()
  })
})

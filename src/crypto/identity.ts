/**
 * The node identity: an Ed25519 key pair generated locally on first start and kept in a JSON file
 * (reference §2, DESIGN.md §5). The registry binds the node ID to the public key, so losing or silently
 * replacing this file loses the node ID: a file that exists but cannot be used is a typed error and is
 * never overwritten; only a missing file leads to a new identity.
 *
 * File format (Go compatible): `{"private_key": b64, "public_key": b64}`, standard base64, the private
 * key in Go's 64-byte `seed ‖ public key` form; file mode 0600 in a directory created with mode 0700.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto"
import { Effect, FileSystem, Path, Result, Schema } from "effect"
import type { PlatformError } from "effect/PlatformError"
import { writeFileAtomic } from "../lifecycle/atomic-file.ts"
import { decodeBase64, encodeBase64 } from "./base64.ts"
import { asBuffer, bytesEqual } from "./bytes.ts"
import { challengeBytes, ED25519_PUBLIC_KEY_LENGTH, ED25519_SEED_LENGTH, signEd25519 } from "./signing.ts"

/** Go's `ed25519.PrivateKeySize`: seed ‖ public key. */
export const GO_PRIVATE_KEY_LENGTH = ED25519_SEED_LENGTH + ED25519_PUBLIC_KEY_LENGTH

export const IdentityFailure = Schema.Literals([
  "corrupt", // not JSON, missing fields, bad base64, wrong key lengths
  "mismatch", // well-formed, but the public key is not the one the private key yields
  "unreadable", // exists but cannot be read (permissions, a directory, I/O error)
  "unwritable" // a new identity could not be persisted
])
export type IdentityFailure = typeof IdentityFailure.Type

export class IdentityError extends Schema.TaggedError<IdentityError>()("IdentityError", {
  path: Schema.String,
  reason: IdentityFailure,
  detail: Schema.String
}) {
  /** Machine-readable code, stable across releases: `identity_<reason>`. */
  get code(): string {
    return `identity_${this.reason}`
  }
  /** What the operator can do about it. */
  get hint(): string {
    switch (this.reason) {
      case "corrupt":
      case "mismatch":
        return `restore ${this.path} from a backup, or move it aside to generate a new identity ` +
          `(keep the old file: your node ID is bound to its key, a new key gets a new node ID)`
      case "unreadable":
        return `make ${this.path} a regular file readable by the daemon's user`
      case "unwritable":
        return `make the directory of ${this.path} creatable and writable by the daemon's user, ` +
          `or point --identity somewhere that is`
    }
  }
  override get message(): string {
    return `identity ${this.path}: ${this.detail}`
  }
}

export class Identity {
  /** Raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array
  /** The registry's form of the public key (standard base64). */
  readonly publicKeyBase64: string
  // An ECMAScript private field: never enumerated, so logging or inspecting an Identity cannot leak it.
  readonly #privateKey: KeyObject

  private constructor(privateKey: KeyObject) {
    this.#privateKey = privateKey
    this.publicKey = createPublicKey(privateKey).export({ format: "raw-public" })
    this.publicKeyBase64 = encodeBase64(this.publicKey)
  }

  static generate(): Identity {
    return new Identity(generateKeyPairSync("ed25519").privateKey)
  }

  /** From the 32-byte RFC 8032 secret key (Go's seed). The caller still owns, and should zero, `seed`. */
  static fromSeed(seed: Uint8Array): Identity {
    return new Identity(createPrivateKey({ key: asBuffer(seed), format: "raw-private", asymmetricKeyType: "ed25519" }))
  }

  sign(message: Uint8Array): Uint8Array {
    return signEd25519(this.#privateKey, message)
  }

  /** A registry signature: standard base64 of the signature over the UTF-8 challenge (e.g. `heartbeat:42`). */
  signChallenge(challenge: string): string {
    return encodeBase64(this.sign(challengeBytes(challenge)))
  }

  /** Go's 64-byte `seed ‖ public key`, for persistence only; the caller should zero it after use. */
  exportPrivateKey(): Uint8Array {
    const seed = this.#privateKey.export({ format: "raw-private" })
    const out = new Uint8Array(GO_PRIVATE_KEY_LENGTH)
    out.set(seed)
    out.set(this.publicKey, ED25519_SEED_LENGTH)
    seed.fill(0)
    return out
  }
}

const IdentityFile = Schema.Struct({ private_key: Schema.String, public_key: Schema.String })
const IdentityFileJson = Schema.fromJsonString(IdentityFile)

/** The file's text. The base64 private key ends up in an immutable JS string; only raw buffers are zeroed. */
export const encodeIdentityFile = (identity: Identity): string => {
  const privateKey = identity.exportPrivateKey()
  const text = JSON.stringify({ private_key: encodeBase64(privateKey), public_key: identity.publicKeyBase64 }, null, 2)
  privateKey.fill(0)
  return `${text}\n`
}

/** Parses and checks an identity file's text. Pure; `path` only labels the error. */
export const decodeIdentityFile = (path: string, text: string): Result.Result<Identity, IdentityError> => {
  const fail = (reason: IdentityFailure, detail: string) => Result.fail(new IdentityError({ path, reason, detail }))
  // The schema's own message is not used: it may quote file content, i.e. key material, into logs.
  const fields = Schema.decodeUnknownResult(IdentityFileJson)(text)
  if (Result.isFailure(fields)) {
    return fail("corrupt", "not a JSON object with string fields private_key and public_key")
  }
  const privateKey = decodeBase64(fields.success.private_key)
  const publicKey = decodeBase64(fields.success.public_key)
  try {
    if (privateKey === undefined || publicKey === undefined) {
      return fail("corrupt", "private_key or public_key is not standard base64")
    }
    if (privateKey.byteLength !== GO_PRIVATE_KEY_LENGTH || publicKey.byteLength !== ED25519_PUBLIC_KEY_LENGTH) {
      return fail(
        "corrupt",
        `expected a ${GO_PRIVATE_KEY_LENGTH}-byte private_key and a ${ED25519_PUBLIC_KEY_LENGTH}-byte public_key, ` +
          `got ${privateKey.byteLength} and ${publicKey.byteLength} bytes`
      )
    }
    const identity = Identity.fromSeed(privateKey.subarray(0, ED25519_SEED_LENGTH))
    if (!bytesEqual(identity.publicKey, publicKey)) {
      return fail("mismatch", "public_key is not the public key of private_key's seed")
    }
    // Go's PrivateKey.Public() returns these 32 bytes, so a Go daemon would announce them: they must agree too.
    if (!bytesEqual(privateKey.subarray(ED25519_SEED_LENGTH), publicKey)) {
      return fail("mismatch", "the public half of private_key differs from public_key")
    }
    return Result.succeed(identity)
  } finally {
    privateKey?.fill(0)
  }
}

const isNotFound = (error: PlatformError): boolean =>
  error.reason._tag === "NotFound"

/**
 * Persists `identity` at `file` (atomic replace, mode 0600), creating missing directories with mode 0700.
 * An existing directory's mode is left alone: it may be shared and is the operator's choice.
 */
export const saveIdentity = Effect.fn("saveIdentity")(function*(
  file: string,
  identity: Identity
): Effect.fn.Return<void, IdentityError, FileSystem.FileSystem | Path.Path> {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const unwritable = (error: PlatformError) => new IdentityError({ path: file, reason: "unwritable", detail: error.message })
  yield* fs.makeDirectory(path.dirname(file), { recursive: true, mode: 0o700 }).pipe(Effect.mapError(unwritable))
  yield* writeFileAtomic(file, encodeIdentityFile(identity), { mode: 0o600 }).pipe(Effect.mapError(unwritable))
})

/**
 * Loads the identity at `file`, or generates and saves a new one if (and only if) the file does not exist.
 *
 * Known limit: two processes starting at the same instant on the same missing file could both generate,
 * and the later rename wins. One identity file belongs to one daemon, so this is not guarded further.
 */
export const loadOrCreateIdentity = Effect.fn("loadOrCreateIdentity")(function*(
  file: string
): Effect.fn.Return<Identity, IdentityError, FileSystem.FileSystem | Path.Path> {
  const fs = yield* FileSystem.FileSystem
  const read = yield* Effect.result(fs.readFileString(file))
  if (Result.isSuccess(read)) return yield* Effect.fromResult(decodeIdentityFile(file, read.success))
  if (!isNotFound(read.failure)) {
    return yield* new IdentityError({ path: file, reason: "unreadable", detail: read.failure.message })
  }
  const identity = Identity.generate()
  yield* saveIdentity(file, identity)
  yield* Effect.logInfo("generated a new node identity").pipe(
    Effect.annotateLogs({ path: file, public_key: identity.publicKeyBase64 })
  )
  return identity
})

/**
 * The trust handshake message of port 444 (reference §5): one JSON object per overlay stream, at most 64 KiB,
 * `{type, node_id, public_key, justification, signature, reason, timestamp}`.
 *
 * Go's `HandshakeMsg` has no `omitempty`, so a Go peer always sends all seven fields and uses "" for "none";
 * this schema therefore requires every field and accepts "" for `public_key` and `signature` (a present key
 * must be base64 of 32 bytes, a present signature base64 of 64). Which fields a given `type` must fill (a
 * request carries a key, a key demands a signature) is the trust manager's rule, not the codec's.
 */
import { Result, Schema } from "effect"
import { type DecodeError, decodeFail } from "./errors.ts"
import { decodeJsonObjectBody, encodeJson } from "./length-prefixed.ts"
import { fromSchemaError, handshakeChallenge, NodeId, PublicKeyB64, SignatureB64, UnixSeconds } from "./registry.ts"

export const MAX_TRUST_MESSAGE_BYTES = 64 * 1024

export const TrustMessageType = Schema.Literals([
  "handshake_request",
  "handshake_accept",
  "handshake_reject",
  "handshake_revoke"
])
export type TrustMessageType = typeof TrustMessageType.Type

/** Go sends "" for an absent key or signature. */
const orNone = (schema: Schema.String) => Schema.Union([Schema.Literal(""), schema])

// Key order is Go's struct order, so our JSON reads like a Go peer's.
export const TrustMessage = Schema.Struct({
  type: TrustMessageType,
  node_id: NodeId,
  public_key: orNone(PublicKeyB64),
  justification: Schema.String,
  signature: orNone(SignatureB64),
  reason: Schema.String,
  timestamp: UnixSeconds
})
export type TrustMessage = typeof TrustMessage.Type

/** What a trust message's `signature` signs: `handshake:<sender>:<receiver>` (decimal node IDs). */
export const trustHandshakeChallenge = handshakeChallenge

const FRAME = "trust message"

const schemaFailure = (error: Schema.SchemaError): DecodeError => fromSchemaError(FRAME, error)

const tooLarge = (size: number) =>
  decodeFail(FRAME, "oversize", `${size} bytes exceeds the ${MAX_TRUST_MESSAGE_BYTES}-byte limit`)

/** Validates `message` and serialises it as the UTF-8 JSON a stream carries (no length prefix on port 444). */
export const encodeTrustMessage = (message: TrustMessage): Result.Result<Uint8Array, DecodeError> =>
  Result.flatMap(
    Result.mapError(Schema.encodeUnknownResult(TrustMessage)(message), schemaFailure),
    (json) =>
      Result.flatMap(encodeJson(json, FRAME), (bytes) =>
        bytes.byteLength > MAX_TRUST_MESSAGE_BYTES ? tooLarge(bytes.byteLength) : Result.succeed(bytes))
  )

/** Parses and validates the bytes read from a port-444 stream. */
export const decodeTrustMessage = (bytes: Uint8Array): Result.Result<TrustMessage, DecodeError> =>
  bytes.byteLength > MAX_TRUST_MESSAGE_BYTES
    ? tooLarge(bytes.byteLength)
    : Result.flatMap(
      decodeJsonObjectBody(bytes, FRAME),
      (json) => Result.mapError(Schema.decodeUnknownResult(TrustMessage)(json), schemaFailure)
    )

/** Oldest a message may be (replay window). */
export const TRUST_MESSAGE_MAX_AGE_MS = 5 * 60 * 1000
/** Furthest into the future a message may be dated (clock skew). */
export const TRUST_MESSAGE_MAX_FUTURE_MS = 30 * 1000

export type TrustTimestampVerdict = "fresh" | "too_old" | "too_far_ahead"

/**
 * Whether a message dated `timestampSeconds` (unix seconds, as sent) is acceptable at `nowMillis` (unix
 * milliseconds, from the caller's clock): at most 5 minutes old and at most 30 seconds ahead, bounds inclusive.
 */
export const checkTrustTimestamp = (timestampSeconds: number, nowMillis: number): TrustTimestampVerdict => {
  const ageMillis = nowMillis - timestampSeconds * 1000
  if (ageMillis > TRUST_MESSAGE_MAX_AGE_MS) return "too_old"
  if (-ageMillis > TRUST_MESSAGE_MAX_FUTURE_MS) return "too_far_ahead"
  return "fresh"
}

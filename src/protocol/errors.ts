/**
 * The one error every decoder in `src/protocol` returns.
 *
 * Decoders are total: they return `Result.Result<A, DecodeError>` and never throw, because their input comes
 * straight from the network or a peer process. `reason` is the machine-readable class of failure (it becomes
 * the `code` operators and drivers see); `frame` names what was being decoded; `detail` is for humans.
 */
import { Result, Schema } from "effect"

export const DecodeFailure = Schema.Literals([
  "short", // fewer bytes than the fixed layout needs
  "oversize", // longer than the protocol allows
  "bad_magic", // wrong magic / type byte for this decoder
  "bad_checksum", // CRC mismatch
  "inconsistent", // fields disagree with each other or with the byte count
  "invalid" // a field holds a value outside its domain
])
export type DecodeFailure = typeof DecodeFailure.Type

export class DecodeError extends Schema.TaggedError<DecodeError>()("DecodeError", {
  frame: Schema.String,
  reason: DecodeFailure,
  detail: Schema.String
}) {
  /** Machine-readable code, stable across releases: `decode_<reason>`. */
  get code(): string {
    return `decode_${this.reason}`
  }
  override get message(): string {
    return `${this.frame}: ${this.detail}`
  }
}

/** Shorthand for the failure branch of a decoder. */
export const decodeFail = (frame: string, reason: DecodeFailure, detail: string): Result.Result<never, DecodeError> =>
  Result.fail(new DecodeError({ frame, reason, detail }))

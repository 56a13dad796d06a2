/**
 * The one failure type of `pilotctl`: a machine-readable code from the fixed set of reference §10 (scripts and
 * agents branch on it), a message for people, and an optional hint saying what to do about it.
 */
import { Runtime, Schema } from "effect"

export const ERROR_CODES = ["invalid_argument", "not_found", "already_exists", "not_running", "connection_failed", "timeout", "internal"] as const
export type ErrorCode = (typeof ERROR_CODES)[number]

export const isErrorCode = (text: string): text is ErrorCode => (ERROR_CODES as ReadonlyArray<string>).includes(text)

export class CtlError extends Schema.TaggedError<CtlError>()("CtlError", {
  code: Schema.Literals(ERROR_CODES),
  message: Schema.String,
  hint: Schema.optional(Schema.String)
}) {
  override readonly [Runtime.errorExitCode] = 1
}

export const ctlError = (code: ErrorCode, message: string, hint?: string): CtlError =>
  new CtlError(hint === undefined ? { code, message } : { code, message, hint })

/** A failure already shown to the user (or deliberately silent, as `daemon status --check`): exit 1, print nothing. */
export class Reported extends Schema.TaggedError<Reported>()("Reported", {}) {
  override readonly [Runtime.errorExitCode] = 1
}

/** A command line that does not parse (already shown with the help text): exit 2. */
export class UsageFailed extends Schema.TaggedError<UsageFailed>()("UsageFailed", { detail: Schema.String }) {
  override readonly [Runtime.errorExitCode] = 2
}

/**
 * Process exit codes of every pilotfish binary, so a supervisor (systemd, Kubernetes) can tell a clean stop
 * from a crash and a bad configuration from a failure worth restarting. Documented in docs/OPERATIONS.md.
 */
import { Cause, Exit, Runtime } from "effect"
import { isCliError } from "effect/cli/CliError"

export const ExitCode = {
  /** Stopped cleanly: SIGTERM/SIGINT handled, every fiber joined, state saved. */
  ok: 0,
  /** An unexpected failure (a bug, or an error with no more specific code). */
  failure: 1,
  /** Bad command line or configuration: restarting will not help. */
  usage: 2,
  /** Could not start: a port in use, state that cannot be read (e.g. a corrupt snapshot or identity). */
  startup: 3,
  /** An essential fiber (a listener, the data plane, the HTTP health server) failed while running. */
  essentialFailed: 4,
  /** Graceful shutdown overran its deadline and the process was ended by force. */
  shutdownOverran: 5,
  /**
   * The receive watchdog found the daemon wedged (sending, not receiving) after its soft recoveries and asks the
   * supervisor for a restart (reference §12 uses 86). Guarded against restart loops: at most 3 in 2 hours.
   */
  watchdogRestart: 86
} as const

/**
 * Errors that mean "could not start", by tag: failures that reach the top unwrapped only while starting (at
 * run time the same kinds arrive wrapped in `EssentialFiberFailed`) — a port in use (TCP, UDP, HTTP),
 * unreadable state, a name that does not resolve.
 */
const STARTUP_FAILURES = new Set([
  "SocketServerError",
  "DatagramSocketError",
  "ServeError",
  "SnapshotUnreadable",
  "IdentityError",
  "StoreError",
  "HttpServerError",
  "ConfigError",
  "UnresolvableAddress"
])

export const exitCodeOf = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit)) return ExitCode.ok
  // A signal interrupts the main fiber: that is how a service is asked to stop, so it is a clean exit.
  if (Cause.hasInterruptsOnly(exit.cause)) return ExitCode.ok
  const error = Cause.squash(exit.cause)
  if (typeof error === "object" && error !== null) {
    if (Runtime.errorExitCode in error && typeof error[Runtime.errorExitCode] === "number") return error[Runtime.errorExitCode]
    if (isCliError(error)) return ExitCode.usage
    const tag = (error as { readonly _tag?: unknown })._tag
    if (tag === "EssentialFiberFailed") {
      // An essential fiber that ended asking for a specific code (the receive watchdog's restart) keeps it.
      const inner = (error as { readonly cause?: unknown }).cause
      if (Cause.isCause(inner)) {
        const own = Cause.squash(inner)
        if (typeof own === "object" && own !== null && Runtime.errorExitCode in own && typeof own[Runtime.errorExitCode] === "number") {
          return own[Runtime.errorExitCode]
        }
      }
      return ExitCode.essentialFailed
    }
    if (typeof tag === "string" && STARTUP_FAILURES.has(tag)) return ExitCode.startup
  }
  return ExitCode.failure
}

export const teardown: Runtime.Teardown = (exit, onExit) => onExit(exitCodeOf(exit))

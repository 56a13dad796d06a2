/**
 * systemd readiness notification (`Type=notify`, sd_notify(3)): `READY=1` once the daemon serves, `STATUS=…` for
 * `systemctl status`, `STOPPING=1` when shutdown begins, and `WATCHDOG=1` pings while the daemon is healthy when
 * the unit sets `WatchdogSec=`.
 *
 * Mechanism, and why: the protocol is one datagram on the Unix datagram socket named by `NOTIFY_SOCKET`, and Node
 * has no Unix datagram sockets (`dgram` is UDP only; the npm addons that add them are native code we do not want to
 * ship). We run `systemd-notify VAR=VALUE…` instead. It exists wherever `NOTIFY_SOCKET` is set, since that variable
 * is set by systemd itself (Debian/Ubuntu: package `systemd`; on a bare container nothing is set and nothing
 * runs). Since the sender is a child process, the unit needs `NotifyAccess=all`; systemd-notify ≥ 246 waits on a
 * barrier until systemd has processed the message, which closes the old race where systemd could not attribute a
 * message from a short-lived sender to the unit. Each call is bounded (default 5 s) and costs one short process,
 * a few times per daemon lifetime (plus one per half watchdog period when enabled).
 *
 * Errors never reach the daemon: a failed notification is logged once at Warning (with a hint when the command is
 * missing), later ones at Debug. Without `NOTIFY_SOCKET` every call is a no-op.
 */
import { Duration, Effect } from "effect"
import { spawn } from "node:child_process"

export interface SystemdNotifyOptions {
  /** Environment to read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** The helper to run (default `systemd-notify` on the PATH). */
  readonly command?: string
  /** Bound on one notification (default 5 s). */
  readonly timeout?: Duration.Input
}

export interface SystemdNotifier {
  /** `NOTIFY_SOCKET` is set: notifications are sent. */
  readonly enabled: boolean
  /** Half the unit's `WatchdogSec`, when systemd asked this process for watchdog pings. */
  readonly watchdogIntervalMs: number | undefined
  /** Sends `fields` as `KEY=VALUE` lines; never fails. */
  readonly notify: (fields: Readonly<Record<string, string>>) => Effect.Effect<void>
  readonly ready: (status?: string) => Effect.Effect<void>
  readonly stopping: (status?: string) => Effect.Effect<void>
  readonly status: (text: string) => Effect.Effect<void>
  /**
   * Pings `WATCHDOG=1` every `watchdogIntervalMs` while `healthy` says so (a wedged daemon stops pinging and
   * systemd restarts it). Returns at once when no watchdog was requested; otherwise runs until interrupted.
   */
  readonly watchdog: (healthy: Effect.Effect<boolean>) => Effect.Effect<void>
}

interface NotifyFailed {
  readonly detail: string
  /** The helper is not installed. */
  readonly missing: boolean
}
const notifyFailed = (detail: string, missing = false): NotifyFailed => ({ detail, missing })

/** A `STATUS=` value on one line (the protocol is newline-separated). */
const oneLine = (text: string): string => text.replace(/[\r\n]+/g, " ")

const runHelper = (command: string, socket: string, args: ReadonlyArray<string>, timeout: Duration.Input) =>
  Effect.callback<void, NotifyFailed>((resume) => {
    const child = spawn(command, [...args], { env: { ...process.env, NOTIFY_SOCKET: socket }, stdio: ["ignore", "ignore", "pipe"] })
    let stderr = ""
    child.stderr?.on("data", (chunk: Buffer) => {
      if (stderr.length < 1000) stderr += chunk.toString()
    })
    child.on("error", (error: NodeJS.ErrnoException) =>
      resume(Effect.fail(notifyFailed(`${command}: ${error.message}`, error.code === "ENOENT"))))
    child.on("close", (code, signal) =>
      resume(
        code === 0
          ? Effect.void
          : Effect.fail(notifyFailed(`${command} exited ${code ?? signal}: ${stderr.trim() || "no output"}`))
      ))
    return Effect.sync(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    })
  }).pipe(
    Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail(notifyFailed(`${command} did not finish within ${Duration.format(Duration.fromInputUnsafe(timeout))}`)) })
  )

/** Reads the environment once and returns the notifier. */
export const makeSystemdNotifier = (options: SystemdNotifyOptions = {}): SystemdNotifier => {
  const env = options.env ?? process.env
  const socket = env["NOTIFY_SOCKET"]
  const command = options.command ?? "systemd-notify"
  const timeout = options.timeout ?? "5 seconds"
  const watchdogUsec = Number(env["WATCHDOG_USEC"])
  const watchdogPid = env["WATCHDOG_PID"]
  const watchdogIntervalMs = socket !== undefined && socket !== "" && Number.isFinite(watchdogUsec) && watchdogUsec > 0 &&
      (watchdogPid === undefined || watchdogPid === "" || Number(watchdogPid) === process.pid)
    ? Math.max(1, Math.floor(watchdogUsec / 2000))
    : undefined
  let warned = false

  const notify = (fields: Readonly<Record<string, string>>): Effect.Effect<void> => {
    if (socket === undefined || socket === "") return Effect.void
    const args = Object.entries(fields).map(([key, value]) => `${key}=${oneLine(value)}`)
    return runHelper(command, socket, args, timeout).pipe(
      Effect.catch((failure) => {
        if (warned) return Effect.logDebug("systemd notification failed", failure.detail)
        warned = true
        return Effect.logWarning("systemd notification failed; further failures are logged at Debug").pipe(
          Effect.annotateLogs({
            detail: failure.detail,
            ...(failure.missing ? { hint: "install systemd-notify (Debian package systemd) or run the unit with Type=simple" } : {})
          })
        )
      }),
      Effect.annotateLogs({ sent: args.map((a) => a.split("=")[0]).join(",") })
    )
  }

  const withStatus = (fields: Record<string, string>, status: string | undefined) => status === undefined ? fields : { ...fields, STATUS: status }

  return {
    enabled: socket !== undefined && socket !== "",
    watchdogIntervalMs,
    notify,
    ready: (status) => notify(withStatus({ READY: "1" }, status)),
    stopping: (status) => notify(withStatus({ STOPPING: "1" }, status)),
    status: (text) => notify({ STATUS: text }),
    watchdog: (healthy) =>
      watchdogIntervalMs === undefined ? Effect.void : Effect.gen(function*() {
        while (true) {
          if (yield* healthy) yield* notify({ WATCHDOG: "1" })
          yield* Effect.sleep(Duration.millis(watchdogIntervalMs))
        }
      })
  }
}

/**
 * `pilotctl daemon start|stop|status`: run `pilot-daemon` in the background and find it again later.
 *
 * The pid file and the daemon's log live beside the IPC socket (`<socket>.pid`, `<socket>.log`): the socket path
 * already names one daemon, so two daemons on one host (tests, several agents) never share a pid file.
 */
import { type Duration, Effect, Schedule } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { ctlError, type CtlError } from "./errors.ts"
import { ipcJson } from "./ipc-client.ts"

const DAEMON_ENTRY = path.resolve(import.meta.dirname, "../daemon/main.ts")
const START_DEADLINE = "15 seconds"
/** Longer than the daemon's own 20 s shutdown deadline, so a SIGKILL is only for a daemon that is truly stuck. */
const STOP_DEADLINE = "25 seconds"
const POLL = Schedule.spaced("100 millis")

export const pidFileOf = (socketPath: string): string => `${socketPath}.pid`
export const logFileOf = (socketPath: string): string => `${socketPath}.log`

const readPid = (socketPath: string): number | undefined => {
  try {
    const pid = Number.parseInt(fs.readFileSync(pidFileOf(socketPath), "utf8").trim(), 10)
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

const logTail = (file: string): string => {
  try {
    return fs.readFileSync(file, "utf8").split("\n").slice(-10).join("\n")
  } catch {
    return ""
  }
}

/** Polls `check` until it succeeds or `deadline` passes; `onTimeout` decides the failure. */
const pollUntil = <A>(check: Effect.Effect<A, CtlError>, deadline: Duration.Input, onTimeout: () => CtlError) =>
  check.pipe(Effect.retry(POLL), Effect.timeoutOrElse({ duration: deadline, orElse: () => Effect.fail(onTimeout()) }))

export interface StartOptions {
  readonly socketPath: string
  /** Flags passed to pilot-daemon as given (`--socket` is added from the global flag). */
  readonly daemonArgs: ReadonlyArray<string>
  readonly timeout: Duration.Input
}

/** Runs the daemon in this process's place: inherits stdio, returns its exit code. */
export const runForeground = (options: StartOptions) =>
  Effect.callback<number>((resume) => {
    const child = spawn(process.execPath, [DAEMON_ENTRY, ...options.daemonArgs, "--socket", options.socketPath], { stdio: "inherit" })
    const forward = (signal: NodeJS.Signals) => () => child.kill(signal)
    process.on("SIGINT", forward("SIGINT"))
    process.on("SIGTERM", forward("SIGTERM"))
    child.on("exit", (code) => resume(Effect.succeed(code ?? 1)))
  })

export const startBackground = (options: StartOptions) =>
  Effect.gen(function*() {
    const { socketPath } = options
    const existing = readPid(socketPath)
    if (existing !== undefined && isAlive(existing)) {
      return yield* ctlError("already_exists", `a daemon is already running (pid ${existing}, socket ${socketPath})`, "stop it first: pilotctl daemon stop")
    }
    const logFile = logFileOf(socketPath)
    const pid = yield* Effect.try({
      try: () => {
        const log = fs.openSync(logFile, "a")
        const child = spawn(process.execPath, [DAEMON_ENTRY, ...options.daemonArgs, "--socket", socketPath], {
          detached: true,
          stdio: ["ignore", log, log]
        })
        child.unref()
        fs.closeSync(log)
        if (child.pid === undefined) throw new Error("spawn returned no pid")
        fs.writeFileSync(pidFileOf(socketPath), `${child.pid}\n`)
        return child.pid
      },
      catch: (error) => ctlError("internal", `could not start pilot-daemon: ${String(error)}`)
    })
    const exitedEarly = ctlError("internal", `pilot-daemon (pid ${pid}) exited during start-up`, `see ${logFile}`)
    // A daemon that died cannot come up: stop polling at once instead of waiting out the deadline.
    const probe = Effect.suspend(() =>
      isAlive(pid) ? ipcJson(socketPath, { cmd: "Health" }, "HealthOK", "1 second") : Effect.fail(exitedEarly))
    yield* probe.pipe(
      Effect.retry({ schedule: POLL, while: (error) => error !== exitedEarly }),
      Effect.timeoutOrElse({
        duration: START_DEADLINE,
        orElse: () => Effect.fail(ctlError("timeout", `pilot-daemon (pid ${pid}) did not answer on ${socketPath} within 15 s`, `see ${logFile}`))
      }),
      Effect.mapError((error) => error === exitedEarly ? ctlError("internal", `${error.message}:\n${logTail(logFile)}`, `see ${logFile}`) : error)
    )
    const info = (yield* ipcJson(socketPath, { cmd: "Info" }, "InfoOK", options.timeout)) as Record<string, unknown>
    return {
      pid,
      socket: socketPath,
      pid_file: pidFileOf(socketPath),
      log_file: logFile,
      node_id: info["node_id"],
      address: info["address"],
      hostname: info["hostname"]
    }
  })

export const stop = (socketPath: string) =>
  Effect.gen(function*() {
    const pid = readPid(socketPath)
    const notRunning = ctlError("not_running", `no daemon recorded for ${socketPath} (pid file ${pidFileOf(socketPath)})`)
    if (pid === undefined) return yield* notRunning
    const removePidFile = Effect.sync(() => fs.rmSync(pidFileOf(socketPath), { force: true }))
    if (!isAlive(pid)) {
      yield* removePidFile
      return yield* notRunning
    }
    yield* Effect.sync(() => process.kill(pid, "SIGTERM"))
    const exited = Effect.suspend(() => isAlive(pid) ? Effect.fail(ctlError("timeout", "still running")) : Effect.void)
    const forced = yield* pollUntil(exited, STOP_DEADLINE, () => ctlError("timeout", "still running")).pipe(
      Effect.as(false),
      Effect.catch(() =>
        Effect.sync(() => process.kill(pid, "SIGKILL")).pipe(
          Effect.andThen(pollUntil(exited, "5 seconds", () => ctlError("internal", `pid ${pid} survived SIGKILL`))),
          Effect.as(true)
        ))
    )
    yield* removePidFile
    return { pid, forced }
  })

/** Health of the daemon on `socketPath`, with the recorded pid when there is one. */
export const status = (socketPath: string, timeout: Duration.Input) =>
  Effect.map(ipcJson(socketPath, { cmd: "Health" }, "HealthOK", timeout), (health) => ({
    running: true,
    pid: readPid(socketPath) ?? null,
    socket: socketPath,
    health
  }))

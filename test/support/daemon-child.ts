/**
 * A real `pilot-daemon` child process with the layout every test and benchmark gives it: identity and IPC socket
 * in a home directory of its own (`<home>/identity.json`, `<home>/d.sock`; trust.json, inbox/ and received/ land
 * there too), registered with the given registry (and beacon), loopback UDP unless told otherwise. One copy of
 * the arguments and of the readiness line so that a change to either is made once.
 */
import { type Duration, Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { type RunningBinary, startBinary } from "./child-process.ts"

/** Logged once the daemon is registered and its data plane serves; carries the node ID. */
export const PLANE_RUNNING = /message="data plane running".* node_id=(\d+)/

export interface DaemonChildOptions {
  /** Created if missing; holds identity.json and d.sock. */
  readonly home: string
  /** `host:port` of the registry. */
  readonly registry: string
  readonly beacon?: string
  readonly hostname?: string
  /** `--listen`; default `127.0.0.1:0`; `false`: no flag (the binary's own default). */
  readonly listen?: string | false
  /** Further arguments, after the ones above. */
  readonly args?: ReadonlyArray<string>
  /** Run inside this network namespace. */
  readonly netns?: string
}

export interface DaemonChild {
  readonly proc: RunningBinary
  readonly home: string
  readonly socket: string
}

export interface RunningDaemonChild extends DaemonChild {
  readonly nodeId: number
}

/** Spawns the daemon in the current scope (SIGKILLed at scope close if still running), without waiting. */
export const spawnDaemon = (options: DaemonChildOptions) =>
  Effect.gen(function*() {
    fs.mkdirSync(options.home, { recursive: true })
    const socket = path.join(options.home, "d.sock")
    const listen = options.listen ?? "127.0.0.1:0"
    const proc = yield* startBinary("src/daemon/main.ts", [
      "--registry", options.registry,
      ...(options.beacon === undefined ? [] : ["--beacon", options.beacon]),
      ...(listen === false ? [] : ["--listen", listen]),
      "--socket", socket,
      "--identity", path.join(options.home, "identity.json"),
      ...(options.hostname === undefined ? [] : ["--hostname", options.hostname]),
      ...(options.args ?? [])
    ], {}, options.netns === undefined ? {} : { netns: options.netns })
    const child: DaemonChild = { proc, home: options.home, socket }
    return child
  })

/** Waits for the data plane to run (up to `timeout`) and returns the node ID it logged. */
export const awaitPlaneRunning = (proc: RunningBinary, timeout: Duration.Input = "30 seconds") =>
  Effect.map(proc.waitForLine(PLANE_RUNNING, timeout), (match) => Number(match[1]))

/** Spawns the daemon and waits for its data plane to run. */
export const startDaemon = (options: DaemonChildOptions) =>
  Effect.gen(function*() {
    const child = yield* spawnDaemon(options)
    const running: RunningDaemonChild = { ...child, nodeId: yield* awaitPlaneRunning(child.proc) }
    return running
  })

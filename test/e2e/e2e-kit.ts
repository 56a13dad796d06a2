/**
 * Helpers for end-to-end tests that run pilotfish as an operator does: every binary a child process on real
 * loopback sockets, driven through `pilotctl`.
 *
 * - `startRendezvous` / `startNetworkDaemon`: `pilot-rendezvous` (registry + beacon, ephemeral ports unless
 *   given) and `pilot-daemon` children, each daemon with its own identity, data directory and socket.
 * - `startCommand` / `runCommand`: any argv as a child (long-running with collected log lines, or to
 *   completion), for commands that are not one of our entry files (`npm start`, `nsenter …`), by default in
 *   the environment of a terminal (`cleanEnv`: without the variables and PATH entries npm set for the test runner).
 * - `until`: polling with a deadline, for state that converges (a trust decision crossing the network).
 */
import { assert } from "@effect/vitest"
import { type Duration, Effect, Schedule } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { type CompletedRun, runToCompletion, type RunningBinary, startBinary, watchChild } from "../support/child-process.ts"
import { startDaemon } from "../support/daemon-child.ts"
import { ctl, okData } from "../pilotctl/ctl-kit.ts"

export const repoRoot = path.resolve(import.meta.dirname, "../..")

/** Retries `condition` every 200 ms until it holds; dies naming `what` after `times` tries. */
export const until = (what: string, condition: Effect.Effect<boolean, unknown>, times = 150) =>
  condition.pipe(
    Effect.repeat({ until: (done) => done, schedule: Schedule.spaced("200 millis"), times }),
    Effect.flatMap((done) => done ? Effect.void : Effect.die(new Error(`timed out waiting for: ${what}`)))
  )

const RENDEZVOUS_SERVING = /message="pilot-rendezvous serving".* registry=[^ ]*:(\d+) beacon=[^ ]*:(\d+)/

/** The shutdown deadlines the binaries arm (src/rendezvous/main.ts, src/daemon/main.ts). */
export const RENDEZVOUS_DEADLINE = "15 seconds"
export const DAEMON_DEADLINE = "20 seconds"

/** `pilot-rendezvous` on loopback with an embedded store snapshot at `store`; ports 0 = ephemeral. */
export const startRendezvous = (store: string, ports: { readonly registry: number; readonly beacon: number } = { registry: 0, beacon: 0 }) =>
  Effect.gen(function*() {
    const proc = yield* startBinary("src/rendezvous/main.ts", [
      "--registry-addr", `127.0.0.1:${ports.registry}`,
      "--beacon-addr", `127.0.0.1:${ports.beacon}`,
      "--store", store
    ])
    const serving = yield* proc.waitForLine(RENDEZVOUS_SERVING, "30 seconds")
    const registryPort = Number(serving[1])
    const beaconPort = Number(serving[2])
    return { proc, registryPort, beaconPort, registry: `127.0.0.1:${registryPort}`, beacon: `127.0.0.1:${beaconPort}` }
  })

export interface NetworkDaemon {
  readonly name: string
  readonly home: string
  readonly socket: string
  readonly nodeId: number
  readonly proc: RunningBinary
}

/**
 * A `pilot-daemon` child named `name` (its hostname), home `<dir>/<name>` (identity, trust.json, inbox/,
 * received/), socket `<dir>/<name>/d.sock`, private (the default), registered with the given rendezvous.
 * Started again with the same `dir` and `name`, it is the same node: same identity, same data.
 */
export const startNetworkDaemon = (
  dir: string,
  name: string,
  rendezvous: { readonly registry: string; readonly beacon: string },
  extra: ReadonlyArray<string> = []
) =>
  Effect.map(
    startDaemon({ home: path.join(dir, name), registry: rendezvous.registry, beacon: rendezvous.beacon, hostname: name, args: extra }),
    ({ home, socket, nodeId, proc }): NetworkDaemon => ({ name, home, socket, nodeId, proc })
  )

/** Runs `pilotctl <args> --json --socket <daemon's>` and returns `data` (asserting success). */
export const ctlOk = (daemon: NetworkDaemon, ...args: ReadonlyArray<string>) =>
  Effect.map(ctl(...args, "--json", "--socket", daemon.socket), okData)

/** The node IDs `daemon` trusts (`pilotctl trust`). */
export const trustedBy = (daemon: NetworkDaemon) =>
  Effect.map(ctlOk(daemon, "trust"), (data) => (data["trusted"] as ReadonlyArray<{ readonly node_id: number }>).map((t) => t.node_id).sort())

/** The node IDs waiting in `daemon`'s `pilotctl pending`. */
export const pendingAt = (daemon: NetworkDaemon) =>
  Effect.map(ctlOk(daemon, "pending"), (data) => (data["pending"] as ReadonlyArray<{ readonly node_id: number }>).map((p) => p.node_id).sort())

/** SIGTERM; asserts exit 0 within `deadline` and that `socket` (if any) is gone. */
export const stopCleanly = (proc: { readonly stop: (signal?: NodeJS.Signals, timeout?: Duration.Input) => Effect.Effect<number | null, Error> }, deadline: Duration.Input, socket?: string) =>
  Effect.gen(function*() {
    assert.strictEqual(yield* proc.stop("SIGTERM", deadline), 0)
    if (socket !== undefined) assert.isFalse(fs.existsSync(socket), `${socket} removed`)
  })

// ---- arbitrary commands -------------------------------------------------------------------------------------

export type CommandRun = CompletedRun

/**
 * This process's environment without what `npm`/`npx` put there for vitest (`npm_config_*`, `npm_lifecycle_*`…),
 * plus `extra`: a child started from a terminal has none of it, and `npm start` would read it.
 */
export const cleanEnv = (extra: { readonly [name: string]: string } = {}): { readonly [name: string]: string } => {
  const env: { [name: string]: string } = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.toLowerCase().startsWith("npm_")) env[name] = value
  }
  // npx put the project's node_modules/.bin first; a terminal has the system's PATH only.
  const systemPath = (env["PATH"] ?? "").split(path.delimiter).filter((p) => !p.includes(`node_modules${path.sep}.bin`))
  return { ...env, PATH: systemPath.join(path.delimiter), NO_COLOR: "1", ...extra }
}

/** Runs `argv` to completion (resolves on `close`: every byte of output is in); killed if interrupted. */
export const runCommand = (argv: ReadonlyArray<string>, env: { readonly [name: string]: string } = cleanEnv()) => runToCompletion(argv, env)

/**
 * `argv` as a long-running child in the current scope (SIGKILLed at scope close if still running), its stdout and
 * stderr lines collected together. The process signalled is `argv[0]`'s: give the real program (or one that
 * forwards signals, as npm does to a script started with `exec`), not a shell wrapper that would eat the signal.
 */
export const startCommand = (argv: ReadonlyArray<string>, env: { readonly [name: string]: string } = cleanEnv()) =>
  watchChild(argv, { env, output: "merged", label: argv.join(" "), waitTimeout: "30 seconds", stopTimeout: "30 seconds" })

/**
 * Running `pilotctl` as a child process in tests, and reading its `--json` envelopes.
 */
import { assert } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type CompletedRun, runToCompletion } from "../support/child-process.ts"
import { startDaemon } from "../support/daemon-child.ts"
import { startRegistry } from "../support/registry.ts"

const repoRoot = path.resolve(import.meta.dirname, "../..")
const CTL = path.join(repoRoot, "src/pilotctl/main.ts")

export type CtlRun = CompletedRun

/** Runs pilotctl to completion with extra environment; resolves on `close`, so every byte of output is in. */
export const ctlWithEnv = (env: { readonly [name: string]: string }, ...args: ReadonlyArray<string>) =>
  runToCompletion([process.execPath, CTL, ...args], { ...process.env, NO_COLOR: "1", ...env })

export const ctl = (...args: ReadonlyArray<string>) => ctlWithEnv({}, ...args)

export const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "pf-ctl-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

export const envelope = (text: string): Record<string, unknown> => JSON.parse(text.trim()) as Record<string, unknown>

/** Asserts a successful `--json` run and returns its `data`. */
export const okData = (run: CtlRun): Record<string, unknown> => {
  assert.strictEqual(run.code, 0, run.stderr)
  const parsed = envelope(run.stdout)
  assert.strictEqual(parsed["status"], "ok")
  return parsed["data"] as Record<string, unknown>
}

/** Asserts one `--json` error envelope on stderr, nothing on stdout, exit 1, and returns it. */
export const assertErrorEnvelope = (run: CtlRun, code: string) => {
  assert.strictEqual(run.code, 1, run.stderr)
  assert.strictEqual(run.stdout, "")
  const error = envelope(run.stderr)
  assert.strictEqual(error["status"], "error")
  assert.strictEqual(error["code"], code)
  assert.isString(error["message"])
  return error
}

/**
 * A real `pilot-daemon` child process registered to the registry on `registryPort`, its home (identity, data
 * directory, socket) in `<dir>/<name>`, made public so that peers can reach it without a trust handshake.
 * `listen` as in `startDaemon` (default loopback, ephemeral port).
 */
export const startCtlDaemon = (dir: string, registryPort: number, name: string, extra: ReadonlyArray<string> = [], listen?: string) =>
  Effect.gen(function*() {
    const daemon = yield* startDaemon({
      home: path.join(dir, name),
      registry: `127.0.0.1:${registryPort}`,
      hostname: name,
      args: extra,
      ...(listen === undefined ? {} : { listen })
    })
    assert.strictEqual(okData(yield* ctl("set-public", "--json", "--socket", daemon.socket))["visibility"], "public")
    return daemon
  })

/** A registry and two public daemons, alpha (given `alphaArgs`) and bravo, homed in a temporary directory. */
export const startCtlPair = (alphaArgs: ReadonlyArray<string> = []) =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    const registry = yield* startRegistry()
    const a = yield* startCtlDaemon(dir, registry.port, "alpha", alphaArgs)
    const b = yield* startCtlDaemon(dir, registry.port, "bravo")
    return { dir, registry, a, b }
  })

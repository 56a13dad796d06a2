/**
 * Running `pilotctl` as a child process in tests, and reading its `--json` envelopes.
 */
import { assert } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { startBinary } from "../support/child-process.ts"

const repoRoot = path.resolve(import.meta.dirname, "../..")
const CTL = path.join(repoRoot, "src/pilotctl/main.ts")

export interface CtlRun {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs pilotctl to completion with extra environment; resolves on `close`, so every byte of output is in. */
export const ctlWithEnv = (env: { readonly [name: string]: string }, ...args: ReadonlyArray<string>) =>
  Effect.callback<CtlRun>((resume) => {
    const child = spawn(process.execPath, [CTL, ...args], { cwd: repoRoot, env: { ...process.env, NO_COLOR: "1", ...env } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

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

const PLANE_RUNNING = /message="data plane running".* node_id=(\d+)/

/**
 * A real `pilot-daemon` child process registered to the registry on `registryPort`, its home (identity, data
 * directory, socket) in `<dir>/<name>`, made public so that peers can reach it without a trust handshake.
 */
export const startCtlDaemon = (dir: string, registryPort: number, name: string, extra: ReadonlyArray<string> = []) =>
  Effect.gen(function*() {
    const home = path.join(dir, name)
    fs.mkdirSync(home)
    const socket = path.join(home, "d.sock")
    const proc = yield* startBinary("src/daemon/main.ts", [
      "--registry", `127.0.0.1:${registryPort}`,
      "--listen", "127.0.0.1:0",
      "--socket", socket,
      "--identity", path.join(home, "identity.json"),
      "--hostname", name,
      ...extra
    ])
    const nodeId = Number((yield* proc.waitForLine(PLANE_RUNNING, "30 seconds"))[1])
    assert.strictEqual(okData(yield* ctl("set-public", "--json", "--socket", socket))["visibility"], "public")
    return { socket, nodeId, home, proc }
  })

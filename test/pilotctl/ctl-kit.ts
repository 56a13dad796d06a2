/**
 * Running `pilotctl` as a child process in tests, and reading its `--json` envelopes.
 */
import { assert } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

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

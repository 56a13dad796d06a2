/**
 * A pilotfish binary run as a real child process, for end-to-end tests: spawned with this process's Node
 * (type stripping runs the .ts sources directly; signalling the real `node` PID matters, since an `npx`
 * wrapper would eat the signal), its stderr log lines collected, and readiness awaited on a log line rather
 * than a sleep. Released with SIGKILL if a test left it running, so a failing test leaks no process.
 */
import { Deferred, type Duration, Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"

export interface RunningBinary {
  readonly pid: number
  /** Every stderr line so far (operator logs). */
  readonly lines: ReadonlyArray<string>
  /** Every stdout line so far. */
  readonly stdout: ReadonlyArray<string>
  /** Waits for a log line matching `pattern` (up to `timeout`) and returns its match. */
  readonly waitForLine: (pattern: RegExp, timeout?: Duration.Input) => Effect.Effect<RegExpMatchArray, Error>
  /** Sends `signal` and waits for the exit code (up to `timeout`). */
  readonly stop: (signal?: NodeJS.Signals, timeout?: Duration.Input) => Effect.Effect<number | null, Error>
  /** Resolves with the exit code whenever the process exits. */
  readonly exited: Effect.Effect<number | null>
}

const repoRoot = path.resolve(import.meta.dirname, "../..")

export interface WatchOptions {
  /** The environment, as given (nothing added). */
  readonly env: { readonly [name: string]: string | undefined }
  /** `separate`: `lines` and `waitForLine` see stderr only, stdout goes to `stdout`; `merged`: both, interleaved. */
  readonly output: "separate" | "merged"
  /** How failures name the process. */
  readonly label: string
  readonly waitTimeout: Duration.Input
  readonly stopTimeout: Duration.Input
}

/**
 * `argv` as a child in the current scope, in the repository root, SIGKILLed at scope close if still running; its
 * output collected as lines, readiness awaited on a line.
 */
export const watchChild = (argv: ReadonlyArray<string>, options: WatchOptions) =>
  Effect.gen(function*() {
    const exit = yield* Deferred.make<number | null>()
    const child: ChildProcess = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(argv[0]!, argv.slice(1), { cwd: repoRoot, env: options.env, stdio: ["ignore", "pipe", "pipe"] })),
      (child) =>
        child.exitCode === null && child.signalCode === null
          ? Effect.sync(() => child.kill("SIGKILL")).pipe(Effect.andThen(Deferred.await(exit)))
          : Effect.void
    )
    const lines: Array<string> = []
    const stdout: Array<string> = []
    const waiters = new Set<{ pattern: RegExp; done: Deferred.Deferred<RegExpMatchArray> }>()
    const collect = (into: Array<string>, check: boolean) => {
      let partial = ""
      return (chunk: Buffer) => {
        const text = partial + chunk.toString()
        const parts = text.split("\n")
        partial = parts.pop() ?? ""
        for (const line of parts) {
          into.push(line)
          if (!check) continue
          for (const waiter of waiters) {
            const match = line.match(waiter.pattern)
            if (match !== null) {
              waiters.delete(waiter)
              Deferred.doneUnsafe(waiter.done, Effect.succeed(match))
            }
          }
        }
      }
    }
    child.stderr!.on("data", collect(lines, true))
    child.stdout!.on("data", options.output === "merged" ? collect(lines, true) : collect(stdout, false))
    child.on("exit", (code) => Deferred.doneUnsafe(exit, Effect.succeed(code)))

    const waitForLine = (pattern: RegExp, timeout: Duration.Input = options.waitTimeout) =>
      Effect.gen(function*() {
        const seen = lines.map((l) => l.match(pattern)).find((m) => m !== null)
        if (seen) return seen
        const done = yield* Deferred.make<RegExpMatchArray>()
        const waiter = { pattern, done }
        waiters.add(waiter)
        return yield* Deferred.await(done).pipe(
          Effect.raceFirst(Deferred.await(exit).pipe(Effect.flatMap((code) =>
            Effect.fail(new Error(`${options.label} exited (${code}) before printing ${pattern}:\n${lines.join("\n")}`))))),
          Effect.timeoutOrElse({
            duration: timeout,
            orElse: () => Effect.fail(new Error(`no line matching ${pattern} within ${String(timeout)}:\n${lines.join("\n")}`))
          }),
          Effect.ensuring(Effect.sync(() => waiters.delete(waiter)))
        )
      })

    const stop = (signal: NodeJS.Signals = "SIGTERM", timeout: Duration.Input = options.stopTimeout) =>
      Effect.sync(() => child.kill(signal)).pipe(
        Effect.andThen(Deferred.await(exit)),
        Effect.timeoutOrElse({
          duration: timeout,
          orElse: () => Effect.fail(new Error(`${options.label} did not exit within ${String(timeout)} of ${signal}:\n${lines.join("\n")}`))
        })
      )
    const running: RunningBinary = { pid: child.pid!, lines, stdout, waitForLine, stop, exited: Deferred.await(exit) }
    return running
  })

/**
 * `netns`: run inside that network namespace (`ip netns exec` execs Node in place, so the PID and the
 * signals are still Node's own).
 */
export const startBinary = (
  entry: string,
  args: ReadonlyArray<string>,
  env: Record<string, string> = {},
  options: { readonly netns?: string } = {}
) => {
  const command = [process.execPath, path.join(repoRoot, entry), ...args]
  const argv = options.netns === undefined ? command : ["ip", "netns", "exec", options.netns, ...command]
  return watchChild(argv, {
    env: { ...process.env, ...env, NO_COLOR: "1" },
    output: "separate",
    label: entry,
    waitTimeout: "15 seconds",
    stopTimeout: "20 seconds"
  })
}

export interface CompletedRun {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs `argv` to completion in the repository root (resolves on `close`: every byte of output is in); killed if interrupted. */
export const runToCompletion = (argv: ReadonlyArray<string>, env: { readonly [name: string]: string | undefined }) =>
  Effect.callback<CompletedRun>((resume) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd: repoRoot, env })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

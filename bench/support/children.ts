/**
 * Child processes for benchmarks: servers started for the run (a registry, redis-server, an echo server)
 * and tools run to completion (redis-benchmark). Every child is tracked from the moment it is spawned, so
 * `stopAllChildren` — called by the bench's `finally`, and on SIGINT/SIGTERM — leaves nothing behind, and an
 * `exit` hook SIGKILLs whatever is still alive if the bench dies some other way.
 *
 * Readiness is awaited on an output line, never on a sleep.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import * as net from "node:net"

/** Output kept per child: enough for an error message, bounded whatever the child prints. */
const KEEP_OUTPUT_CHARS = 16_384
const STOP_GRACE_MS = 5_000

export interface Child {
  readonly name: string
  readonly process: ChildProcess
  /** The last `KEEP_OUTPUT_CHARS` of stdout and stderr, interleaved as they arrived. */
  readonly output: () => string
  /** Resolves with the first output line matching `pattern`; rejects if the child exits or `timeoutMs` passes. */
  readonly waitForLine: (pattern: RegExp, timeoutMs: number) => Promise<RegExpMatchArray>
  /** Resolves when the child has exited. */
  readonly exited: Promise<void>
}

const running = new Set<Child>()

const isAlive = (child: ChildProcess) => child.pid !== undefined && child.exitCode === null && child.signalCode === null

process.on("exit", () => {
  for (const child of running) if (isAlive(child.process)) child.process.kill("SIGKILL")
})
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    void stopAllChildren().finally(() => process.exit(130))
  })
}

export const spawnChild = (name: string, command: string, args: ReadonlyArray<string>): Child => {
  const proc = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } })
  let output = ""
  let partial = ""
  const watchers = new Set<(line: string) => void>()
  const onChunk = (chunk: Buffer) => {
    const text = chunk.toString("utf8")
    output = (output + text).slice(-KEEP_OUTPUT_CHARS)
    const lines = (partial + text).split("\n")
    partial = lines.pop() ?? ""
    for (const line of lines) for (const watch of watchers) watch(line)
  }
  proc.stdout.on("data", onChunk)
  proc.stderr.on("data", onChunk)
  const exited = new Promise<void>((resolve) => {
    proc.once("exit", () => resolve())
    // A spawn failure (ENOENT…) emits 'error' and never 'exit': it counts as an exit, its message as output.
    proc.on("error", (error) => {
      output += `\n[${command}: ${error.message}]`
      if (proc.pid === undefined) resolve()
    })
  })

  const waitForLine = (pattern: RegExp, timeoutMs: number) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const done = () => {
        watchers.delete(watch)
        clearTimeout(timer)
      }
      const watch = (line: string) => {
        const match = line.match(pattern)
        if (match === null) return
        done()
        resolve(match)
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`${name}: no output line matching ${pattern} within ${timeoutMs} ms:\n${output}`))
      }, timeoutMs)
      watchers.add(watch)
      void exited.then(() => {
        if (!watchers.has(watch)) return
        done()
        reject(new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) before printing ${pattern}:\n${output}`))
      })
    })

  const child: Child = { name, process: proc, output: () => output, waitForLine, exited }
  running.add(child)
  void exited.then(() => running.delete(child))
  return child
}

/** SIGTERM, then SIGKILL after a grace period; resolves once the child is gone. */
export const stopChild = async (child: Child): Promise<void> => {
  if (isAlive(child.process)) {
    child.process.kill("SIGTERM")
    const timer = setTimeout(() => child.process.kill("SIGKILL"), STOP_GRACE_MS)
    await child.exited
    clearTimeout(timer)
  }
  running.delete(child)
}

export const stopAllChildren = async (): Promise<void> => {
  await Promise.all([...running].map(stopChild))
}

/** Runs a tool to completion and returns its stdout; rejects on a non-zero exit or after `timeoutMs` (killed). */
export const runToCompletion = async (name: string, command: string, args: ReadonlyArray<string>, timeoutMs: number): Promise<string> => {
  const child = spawnChild(name, command, args)
  let stdout = ""
  child.process.stdout?.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8")
  })
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    child.process.kill("SIGKILL")
  }, timeoutMs)
  await child.exited
  clearTimeout(timer)
  if (timedOut) throw new Error(`${name} did not finish within ${timeoutMs} ms`)
  if (child.process.exitCode !== 0) throw new Error(`${name} exited with ${child.process.exitCode ?? child.process.signalCode}:\n${child.output()}`)
  return stdout
}

/** A loopback TCP port free right now (the caller binds it soon after; a lost race fails loudly, not silently). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const probe = net.createServer()
    probe.once("error", reject)
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      probe.close(() => resolve(port))
    })
  })

const clockTicksPerSecond = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100
  } catch {
    return 100
  }
})()

/**
 * CPU time (user + system) a child has used so far, in ms, from `/proc/<pid>/stat` (Linux). The kernel counts
 * in clock ticks (10 ms at the usual 100 Hz), so read it around samples of a second or so, not around requests.
 */
export const cpuTimeMs = (child: Child): number => {
  const stat = readFileSync(`/proc/${child.process.pid}/stat`, "utf8")
  // The command name (field 2) may contain spaces; the fields after its closing parenthesis start at field 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  const ticks = Number(fields[11]) + Number(fields[12]) // utime, stime: fields 14 and 15
  return (ticks * 1000) / clockTicksPerSecond
}

/**
 * CPU time (ms, all CPUs together) the whole machine has spent busy so far, from `/proc/stat`. Minus what the
 * bench's own processes used over the same interval, it shows load from *other* processes: this machine is
 * shared, and a foreign busy core halves what a two-process client/server measurement can get.
 */
export const machineBusyMs = (): number => {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!
  // cpu  user nice system idle iowait irq softirq steal …
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number)
  const ticks = [user, nice, system, irq, softirq, steal].reduce<number>((sum, t) => sum + (t ?? 0), 0)
  return (ticks * 1000) / clockTicksPerSecond
}

/** CPU time (ms) used so far by this process and every child still running. */
export const ownCpuMs = (): number => {
  const self = process.cpuUsage()
  let total = (self.user + self.system) / 1000
  for (const child of running) {
    try {
      total += cpuTimeMs(child)
    } catch {
      // exited between the listing and the read: its last CPU time is lost, the caller's interval is then off
    }
  }
  return total
}

/**
 * A real, throwaway `redis-server` for tests: loopback only, a free port, no persistence. Missing binary is a
 * failure naming the package to install, never a skip: the Redis store must be tested wherever the suite runs.
 *
 *   const redis = useRedisServer()                       // vitest: one server for the file (beforeAll/afterAll)
 *   layerRedisStore({ url: redis.url(), keyPrefix: uniqueKeyPrefix() })
 *
 *   const server = yield* startRedisServer              // Effect: a server for the current scope
 *   yield* server.stop                                   // e.g. to test "Redis went away"; idempotent
 *
 * Tests share a server and isolate themselves by key prefix (`uniqueKeyPrefix`), which also lets two store
 * instances of one test share a key space, as two registry processes would.
 */
import { afterAll, beforeAll } from "@effect/vitest"
import { Data, Effect, Exit, Schedule, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import * as net from "node:net"
import * as os from "node:os"

export class RedisServerError extends Data.TaggedError("RedisServerError")<{ readonly detail: string }> {
  override get message(): string {
    return `test redis-server: ${this.detail}`
  }
}

export interface RedisServer {
  readonly port: number
  readonly url: string
  /** Stops the server now (SIGTERM, then SIGKILL if it lingers) and waits for it to exit. */
  readonly stop: Effect.Effect<void>
  /** Freezes the server (SIGSTOP): connections stay open but nothing answers, like a stuck Redis. */
  readonly suspend: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
}

const BINARY = "redis-server"
const READY_WITHIN_MS = 10_000
const EXIT_WITHIN_MS = 5_000
const START_ATTEMPTS = 3

const freePort = Effect.callback<number, RedisServerError>((resume) => {
  const probe = net.createServer()
  probe.once("error", (error) => resume(Effect.fail(new RedisServerError({ detail: `no free port: ${error.message}` }))))
  probe.listen(0, "127.0.0.1", () => {
    const address = probe.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    probe.close(() => resume(Effect.succeed(port)))
  })
})

/** One PING over a raw socket; succeeds only on `+PONG`. */
const ping = (port: number) =>
  Effect.callback<void, RedisServerError>((resume) => {
    const socket = net.createConnection({ host: "127.0.0.1", port })
    let reply = ""
    const settle = (outcome: Effect.Effect<void, RedisServerError>) => {
      socket.destroy()
      resume(outcome)
    }
    socket.setEncoding("utf8")
    socket.on("connect", () => socket.write("PING\r\n"))
    socket.on("data", (chunk: string) => {
      reply += chunk
      if (!reply.includes("\r\n")) return
      settle(reply.startsWith("+PONG") ? Effect.void : Effect.fail(new RedisServerError({ detail: `PING answered ${reply.trim()}` })))
    })
    socket.on("error", (error) => settle(Effect.fail(new RedisServerError({ detail: error.message }))))
    return Effect.sync(() => socket.destroy())
  })

const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null

const waitForExit = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (exited(child)) return resume(Effect.void)
    const onExit = () => resume(Effect.void)
    child.once("exit", onExit)
    return Effect.sync(() => child.off("exit", onExit))
  })

const stopChild = (child: ChildProcess) =>
  Effect.gen(function*() {
    if (exited(child)) return
    child.kill("SIGCONT") // a suspended server cannot act on SIGTERM
    child.kill("SIGTERM")
    yield* waitForExit(child).pipe(
      Effect.timeoutOrElse({
        duration: EXIT_WITHIN_MS,
        orElse: () => Effect.andThen(Effect.sync(() => child.kill("SIGKILL")), waitForExit(child))
      })
    )
  })

const spawnServer = (port: number) =>
  Effect.gen(function*() {
    const child = spawn(BINARY, [
      "--port", String(port),
      "--bind", "127.0.0.1",
      "--save", "",
      "--appendonly", "no",
      "--dir", os.tmpdir(),
      "--loglevel", "warning"
    ], { stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    const collect = (chunk: Buffer) => {
      output += chunk.toString("utf8")
    }
    child.stdout?.on("data", collect)
    child.stderr?.on("data", collect)

    const failedToStart = Effect.callback<never, RedisServerError>((resume) => {
      const onError = (error: NodeJS.ErrnoException) =>
        resume(Effect.fail(new RedisServerError({
          detail: error.code === "ENOENT"
            ? `${BINARY} is not installed (or not on PATH); install it with \`apt-get install redis-server\``
            : `cannot start ${BINARY}: ${error.message}`
        })))
      const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
        resume(Effect.fail(new RedisServerError({ detail: `${BINARY} exited (${signal ?? code}) before answering PING: ${output.trim()}` })))
      child.once("error", onError)
      child.once("exit", onExit)
      return Effect.sync(() => {
        child.off("error", onError)
        child.off("exit", onExit)
      })
    })
    const answersPing = ping(port).pipe(
      Effect.retry(Schedule.spaced("20 millis")),
      Effect.timeoutOrElse({
        duration: READY_WITHIN_MS,
        orElse: () => Effect.fail(new RedisServerError({ detail: `no PONG on port ${port} within ${READY_WITHIN_MS} ms: ${output.trim()}` }))
      })
    )
    yield* Effect.raceFirst(answersPing, failedToStart).pipe(Effect.onError(() => stopChild(child)))
    return child
  })

/** Starts a server (retrying on another port if the free one was taken meanwhile); stopped with the scope. */
export const startRedisServer: Effect.Effect<RedisServer, RedisServerError, Scope.Scope> = Effect.gen(function*() {
  const port = yield* freePort
  const child = yield* Effect.acquireRelease(spawnServer(port), stopChild)
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: stopChild(child),
    suspend: Effect.sync(() => void child.kill("SIGSTOP")),
    resume: Effect.sync(() => void child.kill("SIGCONT"))
  }
}).pipe(Effect.retry({ times: START_ATTEMPTS - 1, while: (error) => !error.detail.includes("apt-get") }))

/** A fresh key namespace, so tests sharing one server never see each other's keys. */
export const uniqueKeyPrefix = (): string => `pilotfish-test:${randomUUID()}:`

/** One server for the whole test file, started before its first test and stopped after its last. */
export const useRedisServer = (): { readonly server: () => RedisServer; readonly url: () => string } => {
  let scope: Scope.Closeable | undefined
  let server: RedisServer | undefined
  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    server = await Effect.runPromise(Scope.provide(startRedisServer, scope))
  })
  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
  })
  const current = () => {
    if (server === undefined) throw new Error("useRedisServer: the server is only available inside tests")
    return server
  }
  return { server: current, url: () => current().url }
}

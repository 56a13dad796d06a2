/**
 * Test kit for the IPC server: a temp socket path, a well-behaved client, a client that never reads, and a small
 * dispatcher whose handlers the tests can observe and hold.
 */
import { NodeSocket } from "@effect/platform-node"
import { Cause, Deferred, Effect, Exit, Queue, Result } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as nodePath from "node:path"
import { type IpcClient, IpcClosed, type IpcDispatcher, ipcError } from "../../src/ipc/client.ts"
import { decodeIpcBody, encodeIpcFrame, type IpcMessage } from "../../src/protocol/ipc.ts"
import { makeFrameSplitter } from "../../src/protocol/length-prefixed.ts"

/** A socket path in a fresh short temp dir (Unix socket paths are limited to ~107 bytes); removed with the scope. */
export const tempSocketPath = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(nodePath.join(os.tmpdir(), "pf-ipc-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map((dir) => nodePath.join(dir, "d.sock")))

export const frame = (message: IpcMessage): Uint8Array => Result.getOrThrow(encodeIpcFrame(message))

const REPLY_DEADLINE = "5 seconds"

/** A driver on an Effect socket: writes frames, reads decoded replies in arrival order. */
export const connectClient = (path: string) =>
  Effect.gen(function*() {
    const socket = yield* NodeSocket.makeNet({ path, openTimeout: "2 seconds" })
    const reader = yield* socket.reader
    const writer = yield* socket.writer
    const inbox = yield* Queue.unbounded<IpcMessage, Cause.Done>()
    const splitter = makeFrameSplitter()
    yield* Effect.forkScoped(Effect.gen(function*() {
      while (true) {
        for (const chunk of yield* reader.pull) {
          const bodies = Result.getOrThrow(splitter.push(typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk))
          for (const body of bodies) Queue.offerUnsafe(inbox, Result.getOrThrow(decodeIpcBody(body)))
        }
      }
    }).pipe(Effect.catchTag("SocketError", () => Queue.end(inbox))))
    const next = Queue.take(inbox).pipe(Effect.timeout(REPLY_DEADLINE))
    return {
      writeRaw: (bytes: Uint8Array) => writer.write(bytes),
      request: (message: IpcMessage) => writer.write(frame(message)),
      /** The next frame from the server; fails with `Cause.Done` once the server closed the connection. */
      next,
      roundTrip: (message: IpcMessage) => Effect.andThen(writer.write(frame(message)), next)
    }
  })

/** A driver that sends but never reads: its socket is paused, so the server's writes eventually block. */
export const connectStalledClient = (path: string) =>
  Effect.gen(function*() {
    const socket = yield* Effect.acquireRelease(
      Effect.callback<net.Socket, Error>((resume) => {
        const s = net.createConnection({ path })
        s.once("connect", () => resume(Effect.succeed(s)))
        s.once("error", (error) => resume(Effect.fail(error)))
      }),
      (s) => Effect.sync(() => s.destroy())
    )
    socket.pause()
    socket.on("error", () => {}) // a reset from the server is the expected outcome
    return { write: (bytes: Uint8Array) => Effect.sync(() => socket.write(bytes)) }
  })

export const INFO_PADDING = 16 * 1024

/**
 * Health → HealthOK; Info → a 16 KiB InfoOK; RotateKey → held until `releaseSlow`, then RotateKeyOK;
 * Deregister → dies (a handler bug). Records clients, closed clients, slow-handler concurrency and queue fill.
 */
export const makeTestDispatcher = (queueCapacity: number) =>
  Effect.gen(function*() {
    const releaseSlow = yield* Deferred.make<void>()
    const queueFull = yield* Deferred.make<void>()
    const closedClients = yield* Queue.unbounded<number>()
    const healthSendClosed = yield* Deferred.make<number>()
    const slowParked = { target: Number.POSITIVE_INFINITY, reached: yield* Deferred.make<void>() }
    const state = { clients: new Map<number, IpcClient>(), slowRunning: 0, slowMax: 0 }

    const dispatcher: IpcDispatcher = {
      dispatch: (client, message) =>
        Effect.gen(function*() {
          state.clients.set(client.id, client)
          switch (message.cmd) {
            case "Health":
              return yield* client.send({ cmd: "HealthOK", json: { status: "ok" } }).pipe(
                Effect.tapError(() => Deferred.succeed(healthSendClosed, client.id))
              )
            case "Info":
              yield* client.send({ cmd: "InfoOK", json: { padding: "x".repeat(INFO_PADDING) } })
              if (client.queuedFrames() >= queueCapacity) yield* Deferred.succeed(queueFull, undefined)
              return
            case "RotateKey":
              state.slowRunning++
              state.slowMax = Math.max(state.slowMax, state.slowRunning)
              if (state.slowRunning >= slowParked.target) yield* Deferred.succeed(slowParked.reached, undefined)
              yield* Deferred.await(releaseSlow).pipe(Effect.ensuring(Effect.sync(() => state.slowRunning--)))
              return yield* client.send({ cmd: "RotateKeyOK", json: {} })
            case "Deregister":
              return yield* Effect.die(new Error("handler bug"))
            default:
              return yield* client.send(ipcError(`unsupported ${message.cmd}`))
          }
        }),
      clientClosed: (client) => Queue.offer(closedClients, client.id).pipe(Effect.asVoid)
    }
    return { dispatcher, state, releaseSlow, queueFull, closedClients, healthSendClosed, slowParked }
  })

export const isIpcClosed = (exit: Exit.Exit<unknown, unknown>): boolean =>
  Exit.isFailure(exit) && Cause.squash(exit.cause) instanceof IpcClosed

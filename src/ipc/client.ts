/**
 * One IPC client connection of the daemon (reference §9 "Concurrency design (PR (b))", §14.8).
 *
 * Fibers per client, all in the connection's scope:
 * - the read loop (the connection's own fiber): splits frames, decodes them, answers a bad frame with an Error
 *   frame (an oversize length prefix also ends the connection: the stream can no longer be framed). Health,
 *   Send, SendTo, SendToConfirm and Cancel are dispatched inline, in order (byte order of sends; Health must
 *   answer even when every request slot is parked). Every other request first takes one of `maxInFlight` slots
 *   — when all are taken the read loop waits, which is the backpressure — and runs in its own fiber of a
 *   FiberSet, so a request that dies is contained, counted and answered with an Error frame.
 * - the write loop: the ONLY writer, fed by a bounded send queue. Each write has a deadline (10 s); overrunning
 *   it or a socket error ends the writer, which shuts the queue (every later or blocked `send` fails with
 *   `IpcClosed` instead of filling an orphaned queue) and destroys the socket, which ends the read loop.
 *
 * `send` never drops: while the queue is full it waits until the frame is queued, the client closes, or the
 * writer exits. A message that cannot be encoded (e.g. a reply over 1 MiB) is replaced by an Error frame saying
 * so, so a driver waiting for that reply is never left hanging.
 *
 * Close (peer gone, oversize frame, writer exit, or server shutdown), in order: in-flight requests are
 * interrupted; the dispatcher's `clientClosed` hook runs (bounded); the queue is ended so `send` fails fast and
 * the writer drains what is queued, then ends the socket — all within the drain deadline (3 s), after which the
 * writer is interrupted and the socket destroyed.
 */
import { NodeSocket } from "@effect/platform-node"
import { Cause, type Duration, Effect, Fiber, FiberSet, Option, Queue, Result, Schema, Semaphore } from "effect"
import type * as Socket from "effect/socket/Socket"
import { boundedStep } from "../lifecycle/bounded.ts"
import { decodeIpcBody, encodeIpcFrame, IPC_GENERIC_ERROR_CODE, type IpcMessage } from "../protocol/ipc.ts"
import { makeFrameSplitter } from "../protocol/length-prefixed.ts"
import { countRequest, type IpcCounters } from "./stats.ts"

/** The client is closing or its writer has exited: nothing more can be sent to it. */
export class IpcClosed extends Schema.TaggedError<IpcClosed>()("IpcClosed", { client: Schema.Number }) {
  /** Machine-readable code, stable across releases. */
  get code(): string {
    return "ipc_closed"
  }
  override get message(): string {
    return `IPC client ${this.client} is closed`
  }
}

export interface IpcClient {
  /** Unique per server, in accept order. */
  readonly id: number
  /**
   * Queues one frame (a reply or a push) for the write loop. Waits while the send queue is full; fails with
   * `IpcClosed` once the client is closing or its writer has exited. Never drops.
   */
  readonly send: (message: IpcMessage) => Effect.Effect<void, IpcClosed>
  /** Frames waiting in the send queue right now. */
  readonly queuedFrames: () => number
}

/**
 * What the daemon plugs in. `dispatch` handles one decoded request and answers through `client.send`; an
 * `IpcClosed` from it means the client went away and is not an error. `clientClosed` runs once per client after
 * its in-flight requests were interrupted: the place to close its overlay connections and unbind its ports.
 */
export interface IpcDispatcher<R = never> {
  readonly dispatch: (client: IpcClient, message: IpcMessage) => Effect.Effect<void, IpcClosed, R>
  readonly clientClosed?: (client: IpcClient) => Effect.Effect<void, never, R>
}

export interface IpcClientSettings {
  readonly sendQueueCapacity: number
  readonly maxInFlight: number
  readonly writeTimeout: Duration.Input
  readonly drainTimeout: Duration.Input
  readonly cleanupTimeout: Duration.Input
}

type Command = IpcMessage["cmd"]

/** Dispatched in the read loop itself (reference §9): ordering of sends, and Health answers with every slot parked. */
const INLINE_COMMANDS: ReadonlySet<Command> = new Set<Command>(["Health", "Send", "SendTo", "SendToConfirm", "Cancel"])

/** Frames the writer hands to the kernel in one corked write: IPC throughput comes from batching (DESIGN.md §8). */
const WRITE_BATCH = 64

export const ipcError = (message: string): IpcMessage => ({ cmd: "Error", code: IPC_GENERIC_ERROR_CODE, message })

const LAST_RESORT_FRAME = Result.getOrThrow(encodeIpcFrame(ipcError("internal error: reply could not be encoded")))

const encodeForSend = (message: IpcMessage): Uint8Array => {
  const frame = encodeIpcFrame(message)
  if (Result.isSuccess(frame)) return frame.success
  const fallback = encodeIpcFrame(ipcError(`${message.cmd}: reply could not be encoded: ${frame.failure.message}`))
  return Result.isSuccess(fallback) ? fallback.success : LAST_RESORT_FRAME
}

const textEncoder = new TextEncoder()

const isCleanClose = (error: Socket.SocketError): boolean => error.reason._tag === "SocketCloseError"

/**
 * Serves one accepted connection until it closes; never fails. `socket` comes from `SocketServer.run`, which
 * also provides the underlying `net.Socket`.
 */
export const serveIpcClient = <R>(
  socket: Socket.Socket,
  id: number,
  settings: IpcClientSettings,
  dispatcher: IpcDispatcher<R>,
  counters: IpcCounters
): Effect.Effect<void, never, R> =>
  Effect.gen(function*() {
    const net = Option.getOrUndefined(yield* Effect.serviceOption(NodeSocket.NetSocket))
    if (net === undefined) return yield* Effect.die(new Error("the socket server did not provide the client's net.Socket"))
    const reader = yield* socket.reader // acquiring the reader lets writes through (effect4-guide §16.2)
    const writer = yield* socket.writer

    // ---- send path ------------------------------------------------------------------------------------------
    const queue = yield* Queue.bounded<Uint8Array, Cause.Done>(settings.sendQueueCapacity)
    let closing = false
    const closed = new IpcClosed({ client: id })
    const noteDepth = () => {
      const depth = Queue.sizeUnsafe(queue)
      if (depth > counters.sendQueueHighWater) counters.sendQueueHighWater = depth
    }
    const send = (message: IpcMessage): Effect.Effect<void, IpcClosed> =>
      Effect.suspend(() => {
        const frame = encodeForSend(message)
        if (Queue.offerUnsafe(queue, frame)) {
          noteDepth()
          return Effect.void
        }
        // Full, ended (closing) or shut down (writer gone): `offer` waits only in the first case.
        return Effect.flatMap(Queue.offer(queue, frame), (queued) => {
          if (!queued) return Effect.fail(closed)
          noteDepth()
          return Effect.void
        })
      })
    const client: IpcClient = { id, send, queuedFrames: () => Queue.sizeUnsafe(queue) }

    // Resolves once the kernel has everything written (or the socket is already gone).
    const endSocket = Effect.callback<void>((resume) => {
      net.end(() => resume(Effect.void))
    })
    const writeLoop = Effect.gen(function*() {
      while (true) {
        const frames = yield* Queue.takeBetween(queue, 1, WRITE_BATCH)
        const [first, ...rest] = frames
        if (first === undefined) continue
        const written = yield* writer.writeAll([first, ...rest]).pipe(
          Effect.timeoutOption(closing ? settings.drainTimeout : settings.writeTimeout)
        )
        if (Option.isNone(written)) {
          counters.writeTimeouts++
          return yield* Effect.logDebug(`IPC client ${id} did not read its replies in time; disconnecting`)
        }
      }
    }).pipe(
      Effect.catchIf(Cause.isDone, () => endSocket), // ended and drained: the orderly close
      Effect.catchTag("SocketError", () => Effect.void), // the peer is gone
      Effect.onExit(() =>
        Effect.sync(() => {
          // From here on every `send`, including those blocked on a full queue, fails with IpcClosed.
          Queue.shutdownUnsafe(queue)
          net.destroy()
        })
      )
    )
    const writerFiber = yield* Effect.forkScoped(writeLoop)
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closing = true
        Queue.endUnsafe(queue)
        // The fiber's own finalizer (registered above, so run next) interrupts it if the drain overran.
        return Effect.ignore(Fiber.await(writerFiber).pipe(Effect.timeoutOption(settings.drainTimeout)))
      })
    )

    // ---- requests -------------------------------------------------------------------------------------------
    const clientClosed = dispatcher.clientClosed
    if (clientClosed !== undefined) {
      yield* Effect.addFinalizer(() => Effect.asVoid(boundedStep(`ipc client ${id} cleanup`, settings.cleanupTimeout, clientClosed(client))))
    }
    // Created last, so it is closed first: in-flight requests are interrupted before the cleanup hook runs.
    const requests = yield* FiberSet.make<void, never>()
    const slots = yield* Semaphore.make(settings.maxInFlight)

    const dispatchContained = (message: IpcMessage): Effect.Effect<void, never, R> =>
      dispatcher.dispatch(client, message).pipe(
        Effect.catchTag("IpcClosed", () => Effect.void),
        Effect.catchDefect((defect) =>
          Effect.gen(function*() {
            counters.requestFailures++
            yield* Effect.logError(`IPC ${message.cmd} request of client ${id} died; answered with an Error frame`, Cause.die(defect))
            yield* Effect.ignore(send(ipcError(`${message.cmd}: internal error`)))
          })
        )
      )

    const route = (body: Uint8Array): Effect.Effect<void, IpcClosed, R> =>
      Effect.gen(function*() {
        const decoded = decodeIpcBody(body)
        if (Result.isFailure(decoded)) {
          counters.badFrames++
          return yield* send(ipcError(decoded.failure.message))
        }
        const message = decoded.success
        countRequest(counters, message.cmd)
        if (INLINE_COMMANDS.has(message.cmd)) return yield* dispatchContained(message)
        yield* Semaphore.take(slots, 1)
        yield* FiberSet.run(
          requests,
          Effect.acquireUseRelease(
            Effect.sync(() => counters.requestsInFlight++),
            () => dispatchContained(message),
            () => Effect.andThen(Effect.sync(() => counters.requestsInFlight--), Semaphore.release(slots, 1))
          )
        )
      })

    const readLoop = Effect.gen(function*() {
      const splitter = makeFrameSplitter()
      while (true) {
        for (const chunk of yield* reader.pull) {
          const bodies = splitter.push(typeof chunk === "string" ? textEncoder.encode(chunk) : chunk)
          if (Result.isFailure(bodies)) {
            counters.badFrames++
            return yield* send(ipcError(bodies.failure.message))
          }
          for (const body of bodies.success) yield* route(body)
        }
      }
    })

    yield* Effect.catchTag(readLoop, "IpcClosed", () => Effect.void)
  }).pipe(
    Effect.scoped,
    // A peer can reset its connection at will: not worth more than Debug.
    Effect.catchTag("SocketError", (error) => isCleanClose(error) ? Effect.void : Effect.logDebug(`IPC client ${id} connection error`, error)),
    Effect.annotateLogs("ipc_client", id)
  )

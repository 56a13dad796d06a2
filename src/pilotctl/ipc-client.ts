/**
 * Talking to the daemon over its IPC socket (reference §9).
 *
 * A session is one connection: requests are written as frames, and everything the daemon sends back lands in one
 * inbox. Replies carry no request ID, so a reply is recognised by its command code; an Error frame answers any
 * request. Pushes (Accept, Recv, CloseOK of a peer close) that arrive while a request waits for its reply are
 * kept, in order, for `next`. The stream commands (connect, send, recv, ping, bench) hold a session for their
 * whole run, because the daemon ties connections and bound ports to the IPC connection that made them.
 * `ipcRequest` is the one-shot case: a session per request, so never more than one outstanding request per reply.
 *
 * The daemon's error text is passed through; a leading `code: ` naming one of the CLI error codes becomes the code.
 */
import { Cause, Duration, Effect, Option, Queue, Result, type Scope } from "effect"
import * as net from "node:net"
import { decodeIpcBody, encodeIpcFrame, type IpcMessage } from "../protocol/ipc.ts"
import { makeFrameSplitter } from "../protocol/length-prefixed.ts"
import { ctlError, type CtlError, type ErrorCode, isErrorCode } from "./errors.ts"

export const DEFAULT_SOCKET = "/tmp/pilot.sock"

const START_HINT = "start it with: pilotctl daemon start"

type Reply<K extends IpcMessage["cmd"]> = Extract<IpcMessage, { readonly cmd: K }>

/**
 * The daemon's own codes that are one of ours under another name: the trust service's refusals (`approve` /
 * `reject` with no pending request, `untrust` of a node not trusted) are the `not_found` those commands document.
 */
const DAEMON_CODES: { readonly [code: string]: ErrorCode } = { no_pending_request: "not_found", not_trusted: "not_found" }

/**
 * An Error frame's text as a CLI error: `not_found: no such node` keeps its code, a daemon code in
 * `DAEMON_CODES` becomes ours (the message keeps the daemon's), anything else is `internal`.
 */
export const daemonError = (message: string): CtlError => {
  const match = /^([a-z_]+): (.*)$/s.exec(message)
  if (match === null) return ctlError("internal", `daemon: ${message}`)
  if (isErrorCode(match[1]!)) return ctlError(match[1], match[2]!)
  const mapped = DAEMON_CODES[match[1]!]
  return mapped !== undefined ? ctlError(mapped, message) : ctlError("internal", `daemon: ${message}`)
}

const connectError = (socketPath: string, error: NodeJS.ErrnoException): CtlError =>
  error.code === "ENOENT" || error.code === "ECONNREFUSED"
    ? ctlError("not_running", `daemon is not running (no listener at ${socketPath})`, START_HINT)
    : ctlError("connection_failed", `IPC socket ${socketPath}: ${error.message}`, "retry; check the socket path and its permissions")

const withReplyDeadline = (replyCmd: string, timeout: Duration.Input) =>
  Effect.timeoutOrElse({
    duration: timeout,
    orElse: () =>
      Effect.fail(ctlError("timeout", `no ${replyCmd} reply from the daemon within ${Duration.format(Duration.fromInputUnsafe(timeout))}`, "retry, or raise --timeout"))
  })

export interface IpcSession {
  /** Writes one frame; there is no reply to wait for (Send, SendTo). */
  readonly send: (message: IpcMessage) => Effect.Effect<void, CtlError>
  /** Writes one frame and waits for its `replyCmd` reply (an Error frame fails), up to `timeout`. */
  readonly request: <K extends IpcMessage["cmd"]>(message: IpcMessage, replyCmd: K, timeout: Duration.Input) => Effect.Effect<Reply<K>, CtlError>
  /** The next pushed frame, or `undefined` when none comes within `timeout`. */
  readonly next: (timeout: Duration.Input) => Effect.Effect<IpcMessage | undefined, CtlError>
}

const encoded = (message: IpcMessage): Effect.Effect<Uint8Array, CtlError> => {
  const frame = encodeIpcFrame(message)
  return Result.isFailure(frame) ? Effect.fail(ctlError("invalid_argument", frame.failure.message)) : Effect.succeed(frame.success)
}

/** Opens a session; the connection closes with the scope (the daemon then closes its connections and ports). */
export const openSession = (socketPath: string): Effect.Effect<IpcSession, CtlError, Scope.Scope> =>
  Effect.gen(function*() {
    const socket = yield* Effect.acquireRelease(
      Effect.callback<net.Socket, CtlError>((resume) => {
        const s = net.createConnection({ path: socketPath })
        const failed = (error: NodeJS.ErrnoException) => resume(Effect.fail(connectError(socketPath, error)))
        s.once("error", failed)
        s.once("connect", () => {
          s.off("error", failed)
          resume(Effect.succeed(s))
        })
        return Effect.sync(() => s.destroy())
      }),
      (s) => Effect.sync(() => s.destroy())
    )
    const inbox = yield* Queue.unbounded<IpcMessage, CtlError | Cause.Done>()
    const splitter = makeFrameSplitter()
    socket.on("data", (chunk: Buffer) => {
      const bodies = splitter.push(chunk)
      if (Result.isFailure(bodies)) {
        Queue.failCauseUnsafe(inbox, Cause.fail(ctlError("connection_failed", `bad reply framing: ${bodies.failure.message}`)))
        return
      }
      for (const body of bodies.success) {
        const message = decodeIpcBody(body)
        if (Result.isFailure(message)) {
          Queue.failCauseUnsafe(inbox, Cause.fail(ctlError("internal", `undecodable reply: ${message.failure.message}`)))
          return
        }
        Queue.offerUnsafe(inbox, message.success)
      }
    })
    socket.on("error", (error) => Queue.failCauseUnsafe(inbox, Cause.fail(connectError(socketPath, error))))
    socket.on("close", () => Queue.endUnsafe(inbox))

    /** Pushes that arrived while a request waited for its reply, oldest first. */
    const held: Array<IpcMessage> = []
    const closedBefore = (what: string) => (error: CtlError | Cause.Done) =>
      Cause.isDone(error) ? ctlError("connection_failed", `the daemon closed the connection before ${what}`, "retry") : error

    // Resumes once the frame is handed to the kernel, so a bulk sender (bench) is paced by the socket.
    const send: IpcSession["send"] = (message) =>
      Effect.flatMap(encoded(message), (frame) =>
        Effect.callback<void, CtlError>((resume) => {
          socket.write(frame, (error) =>
            resume(error === undefined || error === null ? Effect.void : Effect.fail(connectError(socketPath, error))))
        }))

    const request: IpcSession["request"] = <K extends IpcMessage["cmd"]>(message: IpcMessage, replyCmd: K, timeout: Duration.Input) => {
      const awaitReply: Effect.Effect<Reply<K>, CtlError | Cause.Done> = Effect.flatMap(Queue.take(inbox), (reply) => {
        if (reply.cmd === "Error") return Effect.fail(daemonError(reply.message))
        if (reply.cmd === replyCmd) return Effect.succeed(reply as Reply<K>)
        held.push(reply)
        return awaitReply
      })
      return send(message).pipe(
        Effect.andThen(awaitReply),
        Effect.mapError(closedBefore(`answering ${message.cmd}`)),
        withReplyDeadline(replyCmd, timeout)
      )
    }

    const next: IpcSession["next"] = (timeout) => {
      const first = held.shift()
      if (first !== undefined) return Effect.succeed(first)
      return Queue.take(inbox).pipe(
        Effect.mapError(closedBefore("the stream ended")),
        Effect.timeoutOption(timeout),
        Effect.map(Option.getOrUndefined)
      )
    }

    return { send, request, next }
  })

/** One request on a connection of its own: connect, write one frame, wait for the reply, disconnect. */
export const ipcRequest = <K extends IpcMessage["cmd"]>(
  socketPath: string,
  request: IpcMessage,
  replyCmd: K,
  timeout: Duration.Input
): Effect.Effect<Reply<K>, CtlError> =>
  openSession(socketPath).pipe(
    Effect.flatMap((session) => session.request(request, replyCmd, timeout)),
    Effect.scoped,
    // Also bounds connecting, which the session's own deadline does not cover.
    withReplyDeadline(replyCmd, timeout)
  )

/** A request whose reply is JSON (`InfoOK`, `HealthOK`, …): returns the parsed JSON. */
export const ipcJson = (
  socketPath: string,
  request: IpcMessage,
  replyCmd: Extract<IpcMessage, { readonly json: unknown }>["cmd"],
  timeout: Duration.Input
): Effect.Effect<unknown, CtlError> =>
  Effect.map(ipcRequest(socketPath, request, replyCmd, timeout), (reply) => (reply as { readonly json: unknown }).json)

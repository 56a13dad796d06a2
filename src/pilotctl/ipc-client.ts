/**
 * One request to the daemon over its IPC socket (reference §9): connect, write one frame, wait for the reply.
 *
 * Replies carry no request ID, so the reply is recognised by its command code; an Error frame answers any
 * request. Each call uses its own connection, so there is never more than one outstanding request per reply type.
 * The daemon's error text is passed through; a leading `code: ` naming one of the CLI error codes becomes the code.
 */
import { Duration, Effect, Result } from "effect"
import * as net from "node:net"
import { decodeIpcBody, encodeIpcFrame, type IpcMessage } from "../protocol/ipc.ts"
import { makeFrameSplitter } from "../protocol/length-prefixed.ts"
import { ctlError, type CtlError, isErrorCode } from "./errors.ts"

export const DEFAULT_SOCKET = "/tmp/pilot.sock"

const START_HINT = "start it with: pilotctl daemon start"

/** An Error frame's text as a CLI error: `not_found: no such node` keeps its code, anything else is `internal`. */
export const daemonError = (message: string): CtlError => {
  const match = /^([a-z_]+): (.*)$/s.exec(message)
  return match !== null && isErrorCode(match[1]!) ? ctlError(match[1], match[2]!) : ctlError("internal", `daemon: ${message}`)
}

const connectError = (socketPath: string, error: NodeJS.ErrnoException): CtlError =>
  error.code === "ENOENT" || error.code === "ECONNREFUSED"
    ? ctlError("not_running", `daemon is not running (no listener at ${socketPath})`, START_HINT)
    : ctlError("connection_failed", `IPC socket ${socketPath}: ${error.message}`, "retry; check the socket path and its permissions")

export const ipcRequest = <K extends IpcMessage["cmd"]>(
  socketPath: string,
  request: IpcMessage,
  replyCmd: K,
  timeout: Duration.Input
): Effect.Effect<Extract<IpcMessage, { readonly cmd: K }>, CtlError> => {
  const frame = encodeIpcFrame(request)
  if (Result.isFailure(frame)) return Effect.fail(ctlError("invalid_argument", frame.failure.message))
  return Effect.callback<Extract<IpcMessage, { readonly cmd: K }>, CtlError>((resume) => {
    let settled = false
    const socket = net.createConnection({ path: socketPath })
    const settle = (outcome: Effect.Effect<Extract<IpcMessage, { readonly cmd: K }>, CtlError>) => {
      if (settled) return
      settled = true
      socket.destroy()
      resume(outcome)
    }
    const splitter = makeFrameSplitter()
    socket.on("connect", () => socket.write(frame.success))
    socket.on("data", (chunk: Buffer) => {
      const bodies = splitter.push(chunk)
      if (Result.isFailure(bodies)) return settle(Effect.fail(ctlError("connection_failed", `bad reply framing: ${bodies.failure.message}`)))
      for (const body of bodies.success) {
        const message = decodeIpcBody(body)
        if (Result.isFailure(message)) return settle(Effect.fail(ctlError("internal", `undecodable reply: ${message.failure.message}`)))
        const reply = message.success
        if (reply.cmd === "Error") return settle(Effect.fail(daemonError(reply.message)))
        if (reply.cmd === replyCmd) return settle(Effect.succeed(reply as Extract<IpcMessage, { readonly cmd: K }>))
        // Anything else is a push for another purpose; this one-shot connection ignores it.
      }
    })
    socket.on("error", (error) => settle(Effect.fail(connectError(socketPath, error))))
    socket.on("close", () =>
      settle(Effect.fail(ctlError("connection_failed", `the daemon closed the connection before answering ${request.cmd}`, "retry"))))
    return Effect.sync(() => socket.destroy())
  }).pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () =>
        Effect.fail(ctlError("timeout", `no ${replyCmd} reply from the daemon within ${Duration.format(Duration.fromInputUnsafe(timeout))}`, "retry, or raise --timeout"))
    })
  )
}

/** A request whose reply is JSON (`InfoOK`, `HealthOK`, …): returns the parsed JSON. */
export const ipcJson = (
  socketPath: string,
  request: IpcMessage,
  replyCmd: Extract<IpcMessage, { readonly json: unknown }>["cmd"],
  timeout: Duration.Input
): Effect.Effect<unknown, CtlError> =>
  Effect.map(ipcRequest(socketPath, request, replyCmd, timeout), (reply) => (reply as { readonly json: unknown }).json)

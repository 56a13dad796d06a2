/**
 * One overlay connection driven through the daemon's IPC socket, as the stream commands (connect, send, ping,
 * bench) and the mailbox commands (send-message, send-file, subscribe, publish) use it: resolve the target, dial
 * it on an IPC session of its own (the daemon closes the connection with the session), and read what comes back
 * until a deadline. Shared so that both command families wait, time out and close the same way.
 */
import { Clock, Duration, Effect, Result, type Scope } from "effect"
import { type Addr, formatAddr, parseAddr } from "../protocol/address.ts"
import type { IpcMessage } from "../protocol/ipc.ts"
import { ctlError, type CtlError } from "./errors.ts"
import { ipcJson, type IpcSession, openSession } from "./ipc-client.ts"

/** A node written out: a decimal node id (network 0) or a `N:NNNN.HHHH.LLLL` address; `undefined` otherwise. */
export const literalTarget = (input: string): Addr | undefined => {
  if (/^\d+$/.test(input) && Number(input) <= 0xffffffff) return { network: 0, node: Number(input) }
  const addr = parseAddr(input)
  return Result.isSuccess(addr) ? addr.success : undefined
}

/** A target given as a node id, an address, or a hostname (resolved by the daemon). */
export const resolveTarget = (socket: string, input: string, timeout: Duration.Input): Effect.Effect<Addr, CtlError> => {
  const literal = literalTarget(input)
  if (literal !== undefined) return Effect.succeed(literal)
  return Effect.flatMap(ipcJson(socket, { cmd: "ResolveHostname", hostname: input }, "ResolveHostnameOK", timeout), (json) => {
    const nodeId = (json as { readonly node_id?: unknown }).node_id
    return typeof nodeId === "number"
      ? Effect.succeed({ network: 0, node: nodeId })
      : Effect.fail(ctlError("not_found", `"${input}" is not a node id, an address or a known hostname`))
  })
}

export interface Stream {
  readonly session: IpcSession
  readonly connId: number
  readonly target: string
}

/** Dials `port` of the target on a session of its own; the connection is closed with the scope. */
export const openStream = (socket: string, targetInput: string, port: number, timeout: Duration.Input): Effect.Effect<Stream, CtlError, Scope.Scope> =>
  Effect.gen(function*() {
    const addr = yield* resolveTarget(socket, targetInput, timeout)
    const session = yield* openSession(socket)
    const { connId } = yield* session.request({ cmd: "Dial", addr, port }, "DialOK", timeout)
    // A peer that already closed makes Close answer not_found; the connection is gone either way.
    yield* Effect.addFinalizer(() => Effect.ignore(session.request({ cmd: "Close", connId }, "CloseOK", timeout)))
    return { session, connId, target: formatAddr(addr) }
  })

/** The time `timeout` from now, in epoch milliseconds. */
export const deadlineAfter = (timeout: Duration.Input) => Effect.map(Clock.currentTimeMillis, (now) => now + Duration.toMillis(timeout))

const remainingMs = (deadline: number) => Effect.map(Clock.currentTimeMillis, (now) => Math.max(0, deadline - now))

/**
 * The next frame before `deadline` (none: no deadline) that `pick` wants; `undefined` at the deadline. Other frames
 * are dropped.
 */
export const nextMatching = <A>(
  session: IpcSession,
  deadline: number | undefined,
  pick: (message: IpcMessage) => A | undefined
): Effect.Effect<A | undefined, CtlError> =>
  Effect.gen(function*() {
    while (true) {
      const message = yield* session.next(deadline === undefined ? Duration.infinity : yield* remainingMs(deadline))
      if (message === undefined) return undefined
      const picked = pick(message)
      if (picked !== undefined) return picked
    }
  })

/** How the wait for a connection's next bytes ended. */
export type Read = { readonly _tag: "data"; readonly data: Uint8Array } | { readonly _tag: "closed" } | { readonly _tag: "timeout" }

/** The next bytes of the stream's connection, its close by the peer, or the deadline (none: wait for ever). */
export const readConnection = (stream: Stream, deadline: number | undefined): Effect.Effect<Read, CtlError> =>
  Effect.map(
    nextMatching<Read>(stream.session, deadline, (message) => {
      if (message.cmd === "Recv" && message.connId === stream.connId) return { _tag: "data", data: message.data }
      if (message.cmd === "CloseOK" && message.connId === stream.connId) return { _tag: "closed" }
      return undefined
    }),
    (read) => read ?? { _tag: "timeout" }
  )

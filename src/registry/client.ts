/**
 * A registry client: one TCP connection carrying length-prefixed JSON requests, one at a time, each answered in
 * order (reference §6). Used by the daemon's registry session, by `pilotctl` for its direct registry
 * commands, and by the tests and benchmarks.
 *
 * Every call has a deadline (default 8 s, as the Go daemon learned from half-open connections): a call that
 * overruns, or any connection error, discards the connection, and the next call dials a fresh one. An error
 * *reply* (`{"type":"error"}`) is a typed failure with the registry's machine-readable code and is not a
 * connection problem.
 */
import { NodeSocket } from "@effect/platform-node"
import { type Duration, Effect, Exit, Option, Schema, Scope, Semaphore } from "effect"
import type * as Socket from "effect/socket/Socket"
import { decodeJsonObjectBody, encodeJsonFrame, type JsonObject, makeFrameSplitter } from "../protocol/length-prefixed.ts"

export class RegistryUnavailable extends Schema.TaggedError<RegistryUnavailable>()("RegistryUnavailable", {
  address: Schema.String,
  reason: Schema.Literals(["connect", "timeout", "closed", "protocol"]),
  detail: Schema.String
}) {
  get code(): string {
    return this.reason === "timeout" ? "timeout" : "connection_failed"
  }
  get hint(): string {
    return `check that pilot-registry is running and reachable at ${this.address}`
  }
  override get message(): string {
    return `registry ${this.address}: ${this.detail}`
  }
}

export class RegistryRejected extends Schema.TaggedError<RegistryRejected>()("RegistryRejected", {
  requestType: Schema.String,
  code: Schema.String,
  error: Schema.String
}) {
  override get message(): string {
    return `registry refused ${this.requestType}: ${this.error} (${this.code})`
  }
}

export interface RegistryClientOptions {
  readonly host: string
  readonly port: number
  readonly callTimeout?: Duration.Input
}

export interface RegistryClient {
  /** Sends one request and returns its success reply. */
  readonly call: (request: JsonObject) => Effect.Effect<JsonObject, RegistryUnavailable | RegistryRejected>
}

interface Connection {
  readonly scope: Scope.Closeable
  readonly reader: Socket.Reader
  readonly writer: Socket.Writer
  readonly splitter: ReturnType<typeof makeFrameSplitter>
  readonly pending: Array<Uint8Array>
}

export const makeRegistryClient = Effect.fnUntraced(function*(options: RegistryClientOptions) {
  const address = `${options.host}:${options.port}`
  const callTimeout = options.callTimeout ?? "8 seconds"
  const unavailable = (reason: RegistryUnavailable["reason"], detail: string) =>
    new RegistryUnavailable({ address, reason, detail })
  // One request on the wire at a time: replies carry no request ID, only their order matches them up.
  const exclusive = yield* Semaphore.make(1)
  let connection: Connection | undefined

  const discard = Effect.suspend(() => {
    const current = connection
    connection = undefined
    return current === undefined ? Effect.void : Scope.close(current.scope, Exit.void)
  })
  yield* Effect.addFinalizer(() => discard)

  const connect = Effect.gen(function*() {
    if (connection !== undefined) return connection
    const scope = yield* Scope.make()
    const opened = yield* Effect.gen(function*() {
      const socket = yield* NodeSocket.makeNet({ host: options.host, port: options.port, openTimeout: callTimeout })
      const reader = yield* socket.reader
      const writer = yield* socket.writer
      return { scope, reader, writer, splitter: makeFrameSplitter(), pending: [] }
    }).pipe(
      Scope.provide(scope),
      Effect.onError(() => Scope.close(scope, Exit.void)),
      Effect.mapError((e) => unavailable("connect", e.message))
    )
    connection = opened
    return opened
  })

  const readReply = (conn: Connection): Effect.Effect<Uint8Array, RegistryUnavailable> =>
    Effect.gen(function*() {
      while (conn.pending.length === 0) {
        const chunks = yield* conn.reader.pull.pipe(
          Effect.mapError((e) => unavailable("closed", e.reason._tag === "SocketCloseError" ? "connection closed by the registry" : e.message))
        )
        for (const chunk of chunks) {
          const bodies = conn.splitter.push(typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk)
          if (bodies._tag === "Failure") return yield* unavailable("protocol", bodies.failure.message)
          // Copy: a body may be a view into the socket's chunk.
          for (const body of bodies.success) conn.pending.push(body.slice())
        }
      }
      return conn.pending.shift()!
    })

  const call = (request: JsonObject): Effect.Effect<JsonObject, RegistryUnavailable | RegistryRejected> => {
    const requestType = String(request["type"])
    const frame = encodeJsonFrame(request)
    if (frame._tag === "Failure") return Effect.fail(unavailable("protocol", frame.failure.message))
    return Effect.gen(function*() {
      const conn = yield* connect
      yield* conn.writer.write(frame.success).pipe(Effect.mapError((e) => unavailable("closed", e.message)))
      const body = yield* readReply(conn)
      const reply = decodeJsonObjectBody(body, "registry reply")
      if (reply._tag === "Failure") return yield* unavailable("protocol", reply.failure.message)
      return reply.success
    }).pipe(
      Effect.timeoutOption(callTimeout),
      Effect.flatMap(Option.match({
        onNone: () => Effect.fail(unavailable("timeout", `no reply to ${requestType} within ${String(callTimeout)}`)),
        onSome: Effect.succeed
      })),
      // A connection that failed, timed out or was interrupted mid-call may still deliver the late reply, which
      // would then answer the next request: it can never be trusted again.
      Effect.onError(() => discard),
      exclusive.withPermits(1),
      Effect.flatMap((reply) =>
        reply["type"] === "error"
          ? Effect.fail(new RegistryRejected({ requestType, code: String(reply["code"] ?? "unknown"), error: String(reply["error"] ?? "") }))
          : Effect.succeed(reply)
      )
    )
  }

  const client: RegistryClient = { call }
  return client
})

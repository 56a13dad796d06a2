/**
 * The registry's TCP front: length-prefixed JSON requests (reference §6), answered strictly in order on
 * each connection. It owns sockets, deadlines and caps; what a request *means* is the handler's business.
 *
 * Defined behaviour for bad or hostile clients (each counted in `pilot_registry_errors_total{code}`):
 * - more than `maxConnections` open: the newcomer gets one `too_many_connections` error reply, then is closed;
 * - a length prefix over 1 MiB: one `too_large` error reply, then the connection is closed (the stream can no
 *   longer be framed);
 * - a body that is not a UTF-8 JSON object: a `bad_request` error reply; the connection stays usable;
 * - a frame started but not finished within `frameTimeout`, or no request for `idleTimeout`: closed (`timeout`);
 * - a reply the client does not read within `writeTimeout`: closed (`write_timeout`).
 *
 * Shutdown (scope close) drains: new requests get `shutting_down`, requests already being handled finish
 * within `drainTimeout`, then every connection is closed and the listener is gone.
 */
import { NodeSocket, NodeSocketServer } from "@effect/platform-node"
import { Deferred, type Duration, Effect, Fiber, Metric, Option, type Scope } from "effect"
import type { SocketServerError } from "effect/socket/SocketServer"
import type * as Socket from "effect/socket/Socket"
import type { SocketAddress } from "effect/net/NetAddress"
import { decodeJsonObjectBody, encodeJsonFrame, type JsonObject, makeFrameSplitter } from "../protocol/length-prefixed.ts"
import { connectionsActive, connectionsRejectedTotal, countError } from "./metrics.ts"

export interface ClientInfo {
  /** The TCP peer's IP as the server sees it (rate limits and `observed_addr` use it). */
  readonly ip: string
  readonly port: number
}

/** Turns one request into one reply. Never fails: failures are error replies. */
export type RequestHandler = (request: JsonObject, client: ClientInfo) => Effect.Effect<JsonObject>

export interface RegistryServerOptions {
  readonly host?: string
  readonly port: number
  readonly maxConnections?: number
  readonly idleTimeout?: Duration.Input
  readonly frameTimeout?: Duration.Input
  readonly writeTimeout?: Duration.Input
  readonly drainTimeout?: Duration.Input
}

export const errorReply = (code: string, error: string): JsonObject => ({ type: "error", error, code })

const encodeReply = (reply: JsonObject): Uint8Array => {
  const frame = encodeJsonFrame(reply)
  if (frame._tag === "Success") return frame.success
  // Only a reply over 1 MiB gets here; the client learns why instead of waiting for a frame it cannot read.
  const fallback = encodeJsonFrame(errorReply("too_large", `reply to ${String(reply["type"])} exceeds 1 MiB`))
  if (fallback._tag === "Success") return fallback.success
  throw new Error("unreachable: a fixed error reply always encodes")
}

/**
 * Binds the listener and starts serving in a fiber of the current scope; closing the scope drains and closes
 * everything. `failure` completes only if serving stops on its own (an essential-fiber failure for the
 * supervisor to act on).
 */
export const makeRegistryServer = Effect.fnUntraced(function*(
  options: RegistryServerOptions,
  handler: RequestHandler
): Effect.fn.Return<
  { readonly address: SocketAddress; readonly failure: Effect.Effect<never, SocketServerError> },
  SocketServerError,
  Scope.Scope
> {
  const maxConnections = options.maxConnections ?? 4096
  const idleTimeout = options.idleTimeout ?? "5 minutes"
  const frameTimeout = options.frameTimeout ?? "30 seconds"
  const writeTimeout = options.writeTimeout ?? "10 seconds"
  let open = 0
  let inFlight = 0
  let draining = false
  const drained = yield* Deferred.make<void>()

  const server = yield* NodeSocketServer.make({ port: options.port, ...(options.host ? { host: options.host } : {}) })
  const write = (writer: Socket.Writer, frame: Uint8Array) =>
    writer.write(frame).pipe(Effect.timeoutOption(writeTimeout), Effect.map(Option.isSome))

  const handle = (body: Uint8Array, client: ClientInfo): Effect.Effect<JsonObject> => {
    if (draining) return Effect.succeed(errorReply("shutting_down", "registry is shutting down; retry another instance"))
    const request = decodeJsonObjectBody(body, "registry request")
    if (request._tag === "Failure") {
      return countError("bad_request").pipe(Effect.as(errorReply("bad_request", request.failure.message)))
    }
    return handler(request.success, client)
  }

  /** Answers one request. It counts as in flight until its reply is written, so a drain waits for the reply. */
  const answer = (writer: Socket.Writer, body: Uint8Array, client: ClientInfo): Effect.Effect<boolean, Socket.SocketError> =>
    Effect.suspend(() => {
      inFlight++
      return handle(body, client).pipe(
        Effect.flatMap((reply) => write(writer, encodeReply(reply))),
        Effect.ensuring(Effect.sync(() => {
          inFlight--
          if (draining && inFlight === 0) Deferred.doneUnsafe(drained, Effect.void)
        }))
      )
    })

  const serveConnection = (socket: Socket.Socket) =>
    Effect.gen(function*() {
      // `run` provides the Node socket to each connection's fiber (not visible in its types).
      const net = Option.getOrUndefined(yield* Effect.serviceOption(NodeSocket.NetSocket))
      const client: ClientInfo = { ip: net?.remoteAddress ?? "", port: net?.remotePort ?? 0 }
      const reader = yield* socket.reader // acquiring the reader lets writes through (guide §16.2)
      const writer = yield* socket.writer
      if (open >= maxConnections || draining) {
        yield* Metric.update(connectionsRejectedTotal, 1)
        const code = draining ? "shutting_down" : "too_many_connections"
        yield* countError(code)
        yield* write(writer, encodeReply(errorReply(code, `registry is at its limit of ${maxConnections} connections; retry later`)))
        return
      }
      open++
      yield* Metric.update(connectionsActive, open)
      yield* Effect.addFinalizer(() => Effect.suspend(() => Metric.update(connectionsActive, --open)))
      const splitter = makeFrameSplitter()
      while (true) {
        const deadline = splitter.bufferedBytes > 0 ? frameTimeout : idleTimeout
        const chunks = yield* reader.pull.pipe(Effect.timeoutOption(deadline))
        if (Option.isNone(chunks)) return yield* countError("timeout")
        for (const chunk of chunks.value) {
          const bodies = splitter.push(typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk)
          if (bodies._tag === "Failure") {
            yield* countError("too_large")
            yield* write(writer, encodeReply(errorReply("too_large", bodies.failure.message)))
            return
          }
          for (const body of bodies.success) {
            if (!(yield* answer(writer, body, client))) return yield* countError("write_timeout")
          }
        }
      }
    }).pipe(
      Effect.scoped,
      // A closed or reset connection is the normal end of a client; anything else is logged at Debug because a
      // remote party can trigger it at will.
      Effect.catchTag("SocketError", (e) => e.reason._tag === "SocketCloseError" ? Effect.void : Effect.logDebug("registry connection error", e))
    )

  // Finalizers run last-in first-out: the drain below is added after the serve fiber is forked, so at scope
  // close it runs first, while connections are still being served; then the serve fiber is interrupted
  // (closing every connection), then the listener closes.
  const serving = yield* Effect.forkScoped(server.run(serveConnection))
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      draining = true
      if (inFlight > 0) {
        yield* Deferred.await(drained).pipe(
          Effect.timeoutOption(options.drainTimeout ?? "5 seconds"),
          Effect.tap((done) => Option.isNone(done) ? Effect.logWarning(`shutdown drain overran: ${inFlight} requests still in flight`) : Effect.void)
        )
      }
    })
  )

  return { address: server.address, failure: Fiber.join(serving) }
})

/**
 * Per-IPC-client bookkeeping of overlay streams and ports (reference §9): which connection IDs and bound ports a
 * client owns, the fibers that push its Accept / Recv / RecvFrom / CloseOK frames, and their cleanup when it
 * disconnects.
 *
 * - A bound port is one scope holding the transport listener, the datagram binding and their two pusher fibers;
 *   Unbind or disconnect closes it.
 * - Each connection has one pusher fiber (reads in order, pushes Recv; pushes CloseOK once the peer closed or the
 *   stream failed, then half-closes our side and forgets the connection, since the driver was told it is gone).
 * - At most `maxConnections` per client: a Dial past it is refused, an accepted connection past it is reset.
 * - Disconnect: every connection is half-closed (FIN, so the peer sees an orderly close) and every port unbound.
 *
 * The transport is looked up per command: IPC is served before the data plane exists (DESIGN.md §4 rule 3), and
 * until it does stream commands fail with `unavailable: …`.
 */
import { Effect, Exit, Fiber, Queue, Scope } from "effect"
import type { IpcClient } from "../ipc/client.ts"
import type { Addr } from "../protocol/address.ts"
import type { Connection, Transport } from "../transport/transport.ts"

export const MAX_CONNECTIONS_PER_CLIENT = 4096

/** A failure answered to the driver as an Error frame; the message starts with a machine-readable code. */
export class CommandFailure {
  readonly _tag = "CommandFailure"
  readonly code: string
  readonly detail: string
  constructor(code: string, detail: string) {
    this.code = code
    this.detail = detail
  }
  get message(): string {
    return `${this.code}: ${this.detail}`
  }
}

interface OwnedConnection {
  readonly connection: Connection
  pusher: Fiber.Fiber<void> | undefined
}

interface ClientStreams {
  readonly connections: Map<number, OwnedConnection>
  readonly ports: Map<number, Scope.Closeable>
}

export interface IpcStreams {
  readonly bind: (client: IpcClient, port: number) => Effect.Effect<void, CommandFailure>
  readonly unbind: (client: IpcClient, port: number) => Effect.Effect<void, CommandFailure>
  readonly dial: (client: IpcClient, addr: Addr, port: number) => Effect.Effect<number, CommandFailure>
  /** Fire-and-forget: an unknown connection or a failed write is ignored (the driver hears of it via CloseOK). */
  readonly send: (client: IpcClient, connId: number, data: Uint8Array) => Effect.Effect<void>
  readonly close: (client: IpcClient, connId: number) => Effect.Effect<void, CommandFailure>
  readonly sendTo: (addr: Addr, port: number, data: Uint8Array) => Effect.Effect<void, CommandFailure>
  readonly clientClosed: (client: IpcClient) => Effect.Effect<void>
  /** Connections and ports a client owns right now (for tests and stats). */
  readonly owned: (clientId: number) => { readonly connections: number; readonly ports: number }
}

/** Builds the bookkeeping; pusher fibers live in `scope` (the daemon's), so nothing outlives the daemon. */
export const makeIpcStreams = (transport: () => Transport | undefined, scope: Scope.Scope): IpcStreams => {
  const clients = new Map<number, ClientStreams>()

  const streamsOf = (client: IpcClient): ClientStreams => {
    let streams = clients.get(client.id)
    if (streams === undefined) {
      streams = { connections: new Map(), ports: new Map() }
      clients.set(client.id, streams)
    }
    return streams
  }

  const requireTransport = Effect.suspend(() => {
    const current = transport()
    return current === undefined
      ? Effect.fail(new CommandFailure("unavailable", "the data plane is not running yet (not registered)"))
      : Effect.succeed(current)
  })

  const forget = (streams: ClientStreams, connId: number) => {
    const owned = streams.connections.get(connId)
    streams.connections.delete(connId)
    return owned
  }

  /** Takes ownership of `connection` and starts its pusher; `false` (connection reset) past the per-client cap. */
  const adopt = (client: IpcClient, connection: Connection, announce: Effect.Effect<void, unknown>) =>
    Effect.gen(function*() {
      const streams = streamsOf(client)
      if (streams.connections.size >= MAX_CONNECTIONS_PER_CLIENT) {
        yield* connection.abort
        return false
      }
      const owned: OwnedConnection = { connection, pusher: undefined }
      streams.connections.set(connection.id, owned)
      const push = Effect.gen(function*() {
        yield* announce
        while (true) {
          const chunk = yield* connection.read
          if (chunk === undefined) break
          yield* client.send({ cmd: "Recv", connId: connection.id, data: chunk })
        }
      }).pipe(
        Effect.ignore,
        Effect.andThen(Effect.suspend(() => {
          // Still ours: the peer ended it (not our Close), so tell the driver and finish our side.
          if (streams.connections.get(connection.id) !== owned) return Effect.void
          forget(streams, connection.id)
          return Effect.andThen(connection.close, Effect.ignore(client.send({ cmd: "CloseOK", connId: connection.id })))
        }))
      )
      owned.pusher = yield* Effect.forkIn(push, scope)
      return true
    })

  const bind: IpcStreams["bind"] = (client, port) =>
    Effect.gen(function*() {
      const t = yield* requireTransport
      const streams = streamsOf(client)
      if (streams.ports.has(port)) return yield* Effect.fail(new CommandFailure("port_in_use", `port ${port} is already bound by this client`))
      const portScope = yield* Scope.fork(scope)
      yield* Effect.gen(function*() {
        const listener = yield* t.listen(port)
        const datagrams = yield* t.bindDatagrams(port)
        yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
          const connection = yield* listener.accept
          yield* adopt(client, connection, client.send({
            cmd: "Accept",
            localPort: port,
            connId: connection.id,
            remoteAddr: connection.remote,
            remotePort: connection.remotePort
          }))
        })).pipe(Effect.ignore))
        yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
          const datagram = yield* Queue.take(datagrams)
          yield* client.send({ cmd: "RecvFrom", srcAddr: datagram.src, srcPort: datagram.srcPort, dstPort: datagram.dstPort, data: datagram.payload })
        })).pipe(Effect.ignore))
      }).pipe(
        Scope.provide(portScope),
        Effect.mapError((error) => new CommandFailure(error.code, `cannot bind port ${port}: ${error.message}`)),
        Effect.onError(() => Scope.close(portScope, Exit.void))
      )
      streams.ports.set(port, portScope)
    })

  const unbind: IpcStreams["unbind"] = (client, port) =>
    Effect.suspend(() => {
      const streams = streamsOf(client)
      const portScope = streams.ports.get(port)
      if (portScope === undefined) return Effect.fail(new CommandFailure("not_found", `port ${port} is not bound by this client`))
      streams.ports.delete(port)
      return Scope.close(portScope, Exit.void)
    })

  const dial: IpcStreams["dial"] = (client, addr, port) =>
    Effect.gen(function*() {
      const t = yield* requireTransport
      if (streamsOf(client).connections.size >= MAX_CONNECTIONS_PER_CLIENT) {
        return yield* Effect.fail(new CommandFailure("limit", `at most ${MAX_CONNECTIONS_PER_CLIENT} connections per client`))
      }
      const connection = yield* t.dial(addr, port).pipe(
        Effect.mapError((error) => new CommandFailure(error.code, `dial ${addr.network}:${addr.node} port ${port}: ${error.message}`))
      )
      if (!(yield* adopt(client, connection, Effect.void))) {
        return yield* Effect.fail(new CommandFailure("limit", `at most ${MAX_CONNECTIONS_PER_CLIENT} connections per client`))
      }
      return connection.id
    })

  const send: IpcStreams["send"] = (client, connId, data) =>
    Effect.suspend(() => {
      const owned = clients.get(client.id)?.connections.get(connId)
      // The frame's bytes are a view into the read buffer: copy before the transport keeps them.
      return owned === undefined ? Effect.void : Effect.ignore(owned.connection.write(data.slice()))
    })

  const finish = (owned: OwnedConnection) =>
    Effect.andThen(owned.pusher === undefined ? Effect.void : Fiber.interrupt(owned.pusher), owned.connection.close)

  const close: IpcStreams["close"] = (client, connId) =>
    Effect.suspend(() => {
      const owned = forget(streamsOf(client), connId)
      if (owned === undefined) return Effect.fail(new CommandFailure("not_found", `connection ${connId} is not open on this client`))
      return finish(owned)
    })

  const sendTo: IpcStreams["sendTo"] = (addr, port, data) =>
    Effect.gen(function*() {
      const t = yield* requireTransport
      yield* t.sendDatagram(addr, port, data.slice()).pipe(Effect.mapError((error) => new CommandFailure(error.code, error.message)))
    })

  const clientClosed: IpcStreams["clientClosed"] = (client) =>
    Effect.suspend(() => {
      const streams = clients.get(client.id)
      clients.delete(client.id)
      if (streams === undefined) return Effect.void
      const owned = [...streams.connections.values()]
      streams.connections.clear()
      const ports = [...streams.ports.values()]
      streams.ports.clear()
      return Effect.andThen(
        Effect.forEach(owned, finish, { discard: true }),
        Effect.forEach(ports, (portScope) => Scope.close(portScope, Exit.void), { discard: true })
      )
    })

  const owned: IpcStreams["owned"] = (clientId) => {
    const streams = clients.get(clientId)
    return { connections: streams?.connections.size ?? 0, ports: streams?.ports.size ?? 0 }
  }

  return { bind, unbind, dial, send, close, sendTo, clientClosed, owned }
}

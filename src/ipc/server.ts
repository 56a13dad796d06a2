/**
 * The daemon's IPC server on a Unix socket (reference §9, DESIGN.md §4): binds the socket file (0600, no
 * permission race, see `socket-file.ts`), accepts clients up to `maxClients` and serves each one with
 * `serveIpcClient`. Everything lives in the caller's scope: closing it stops accepting, closes every client
 * (each drains within its drain deadline), closes the listener and removes the socket file, in that order.
 *
 * Past `maxClients` a newcomer is accepted and closed at once (counted): the kernel's accept queue must keep
 * moving, and a refused driver sees EOF instead of hanging in connect.
 */
import { NodeSocket, NodeSocketServer } from "@effect/platform-node"
import { type Duration, Effect, Fiber, type FileSystem, Option, type Path, type Scope } from "effect"
import type { PlatformError } from "effect/PlatformError"
import type * as Socket from "effect/socket/Socket"
import type { SocketServerError } from "effect/socket/SocketServer"
import { type IpcClientSettings, type IpcDispatcher, serveIpcClient } from "./client.ts"
import { installSocketFile, type IpcSocketFileLost } from "./socket-file.ts"
import { type IpcServerStats, makeIpcCounters, snapshotIpcCounters } from "./stats.ts"

export interface IpcServerOptions extends Partial<IpcClientSettings> {
  /** Where the socket file goes (default of the daemon: `/tmp/pilot.sock`). */
  readonly path: string
  /** Clients served at once (default 1024). */
  readonly maxClients?: number
  /** How often the socket file is checked to still be there and ours (default 2 s). */
  readonly socketFileCheckInterval?: Duration.Input
  /** Remove the socket file when this scope closes rather than with the server (see `installSocketFile`). */
  readonly removeSocketFileIn?: Scope.Scope
}

export interface IpcServer {
  /** The socket file clients connect to. */
  readonly path: string
  /**
   * Completes only if the accept loop stops on its own or the socket file is lost (`socket-file.ts`): an
   * essential-fiber failure for the supervisor.
   */
  readonly failure: Effect.Effect<never, SocketServerError | IpcSocketFileLost>
  readonly stats: Effect.Effect<IpcServerStats>
}

export const DEFAULT_IPC_CLIENT_SETTINGS: IpcClientSettings = {
  sendQueueCapacity: 256,
  maxInFlight: 1024,
  writeTimeout: "10 seconds",
  drainTimeout: "3 seconds",
  cleanupTimeout: "5 seconds"
}

export const makeIpcServer = <R>(
  options: IpcServerOptions,
  dispatcher: IpcDispatcher<R>
): Effect.Effect<IpcServer, SocketServerError | PlatformError, R | Scope.Scope | FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const { maxClients = 1024, path, socketFileCheckInterval = "2 seconds", removeSocketFileIn, ...overrides } = options
    const settings: IpcClientSettings = { ...DEFAULT_IPC_CLIENT_SETTINGS, ...overrides }
    const counters = makeIpcCounters()
    let nextClientId = 0

    const acceptClient = (socket: Socket.Socket): Effect.Effect<void, never, R> =>
      Effect.gen(function*() {
        if (counters.clients < maxClients) {
          // Counted before the first yield, so two clients accepted together cannot both take the last place.
          counters.clients++
          return yield* serveIpcClient(socket, ++nextClientId, settings, dispatcher, counters).pipe(
            Effect.ensuring(Effect.sync(() => counters.clients--))
          )
        }
        counters.clientsRefused++
        // Never opened through `socket.reader`, so nothing else would close it.
        const net = yield* Effect.serviceOption(NodeSocket.NetSocket)
        if (Option.isSome(net)) net.value.destroy()
      })

    const installed = yield* installSocketFile(path, (staged) => NodeSocketServer.make({ path: staged }), removeSocketFileIn)
    const accepting = yield* Effect.forkScoped(installed.listening.run(acceptClient))
    return {
      path,
      failure: Effect.raceFirst(Fiber.join(accepting), installed.watch(socketFileCheckInterval)),
      stats: Effect.sync(() => snapshotIpcCounters(counters))
    }
  })

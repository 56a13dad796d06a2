/**
 * The accept loop the bounded services share (data exchange, event stream): every accepted connection is served
 * in its own fiber of a `FiberSet`, at most `maxConnections` at once; one more is reset at once and counted as
 * rejected, so a flood of peers costs a counter, not memory. The loop ends when the listener closes or the scope
 * does (the FiberSet then interrupts the connections still being served).
 */
import { Effect, FiberSet } from "effect"
import type { Connection, Listener } from "../transport/transport.ts"

/** The counters the loop keeps, part of the service's own mutable stats. */
export interface AcceptCounters {
  connections: number
  active: number
  rejected: number
}

/**
 * Forks the accept loop into the current scope. `serve` must handle its own failures; `active` is counted down
 * however it ends.
 */
export const forkAcceptLoop = <R>(
  listener: Listener,
  counters: AcceptCounters,
  maxConnections: number,
  serve: (connection: Connection) => Effect.Effect<void, never, R>
) =>
  Effect.gen(function*() {
    const fibers = yield* FiberSet.make()
    yield* Effect.forkScoped(
      Effect.gen(function*() {
        while (true) {
          const connection = yield* listener.accept
          counters.connections++
          if (counters.active >= maxConnections) {
            counters.rejected++
            yield* connection.abort
            continue
          }
          counters.active++
          yield* FiberSet.run(fibers, serve(connection).pipe(Effect.ensuring(Effect.sync(() => counters.active--))))
        }
      }).pipe(Effect.catchTag("TransportError", () => Effect.void))
    )
  })

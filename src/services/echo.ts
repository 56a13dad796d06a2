/**
 * The echo service on port 7 (reference §11): every byte a peer sends comes back on the same connection. It is
 * what `pilotctl ping` and `pilotctl bench` measure against. Each connection runs in its own fiber of a
 * `FiberSet`; one connection failing (reset, timeout) is counted and never touches the others.
 */
import { Effect, FiberSet } from "effect"
import { WellKnownPort } from "../protocol/packet.ts"
import type { Connection, Transport } from "../transport/transport.ts"

export interface EchoStats {
  readonly connections: number
  readonly bytes: number
  readonly failures: number
}

const echo = (connection: Connection, stats: { bytes: number; failures: number }) =>
  Effect.gen(function*() {
    while (true) {
      const chunk = yield* connection.read
      if (chunk === undefined) break
      stats.bytes += chunk.byteLength
      yield* connection.write(chunk)
    }
    yield* connection.close
  }).pipe(
    Effect.catch((error) =>
      Effect.sync(() => stats.failures++).pipe(Effect.andThen(Effect.logDebug("echo connection ended", error.message))))
  )

/** Serves echo on port 7 until the scope closes; returns live counters. */
export const serveEcho = Effect.fnUntraced(function*(transport: Transport) {
  const listener = yield* transport.listen(WellKnownPort.Echo)
  const fibers = yield* FiberSet.make()
  const stats = { connections: 0, bytes: 0, failures: 0 }
  yield* Effect.forkScoped(
    Effect.gen(function*() {
      while (true) {
        const connection = yield* listener.accept
        stats.connections++
        yield* FiberSet.run(fibers, echo(connection, stats))
      }
    }).pipe(Effect.catchTag("TransportError", () => Effect.void))
  )
  return { stats: (): EchoStats => ({ ...stats }) }
})

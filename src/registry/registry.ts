/**
 * One registry instance: request handling on top of whatever `RegistryStore` is provided, served over TCP,
 * plus the `nodes online` gauge. The binary (`main.ts`) picks the store and supervises the result.
 */
import { Clock, Effect, Metric, Schedule } from "effect"
import { type HandlerOptions, makeRequestHandler } from "./handlers.ts"
import { nodesOnline } from "./metrics.ts"
import { makeRegistryServer, type RegistryServerOptions } from "./server.ts"
import { RegistryStore } from "./store.ts"

export interface RegistryOptions extends RegistryServerOptions, HandlerOptions {}

export const makeRegistry = Effect.fnUntraced(function*(options: RegistryOptions) {
  const store = yield* RegistryStore
  const handler = yield* makeRequestHandler(options)
  const server = yield* makeRegistryServer(options, handler)
  yield* Effect.forkScoped(
    Clock.currentTimeMillis.pipe(
      Effect.flatMap(store.nodesOnline),
      Effect.flatMap((n) => Metric.update(nodesOnline, n)),
      Effect.ignore,
      Effect.repeat(Schedule.spaced("15 seconds"))
    )
  )
  return server
})

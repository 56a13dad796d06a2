/**
 * The daemon's built-in services, started by the data plane once the transport exists: echo on port 7
 * (more follow). Each service listens in the data plane's scope and stops with it.
 */
import { Effect } from "effect"
import type { Transport } from "../transport/transport.ts"
import { serveEcho } from "./echo.ts"

export interface BuiltInServicesOptions {
  /** Where services keep what they receive (the daemon's data directory, `~/.pilot` by default). */
  readonly dataDirectory?: string
}

/** Starts every built-in service on `transport` in the current scope. */
export const serveBuiltInServices = Effect.fnUntraced(function*(transport: Transport, _options: BuiltInServicesOptions) {
  const echo = yield* serveEcho(transport)
  return { echo }
})

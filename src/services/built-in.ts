/**
 * The daemon's built-in services, started by the data plane once the transport exists: echo on port 7, data
 * exchange on port 1001 (messages and files saved under the data directory), event stream on port 1002 (pub/sub).
 * Each service listens in the data plane's scope and stops with it. The services publish `message.received`,
 * `file.received` and `pubsub.*` on the daemon's event bus when one is given.
 *
 * The file-system services are provided here (Node's, without stdio), so the data plane needs none.
 */
import { Effect } from "effect"
import * as os from "node:os"
import * as nodePath from "node:path"
import type { EventBus } from "../events/event-bus.ts"
import { localFileSystem } from "../platform/file-system.ts"
import type { Transport } from "../transport/transport.ts"
import { type DataExchangeOptions, type DataExchangeStats, serveDataExchange } from "./data-exchange.ts"
import { type EchoStats, serveEcho } from "./echo.ts"
import { type EventStreamOptions, type EventStreamStats, serveEventStream } from "./event-stream.ts"

export interface BuiltInServicesOptions {
  /** Where services keep what they receive (the daemon's data directory, `~/.pilot` by default). */
  readonly dataDirectory?: string
  /** The daemon's event bus; services publish what they receive on it. */
  readonly events?: EventBus
  /** Limits of the data-exchange service (connections, read deadline, frame size). */
  readonly dataExchange?: Omit<DataExchangeOptions, "dataDirectory" | "events">
  /** Limits of the event-stream service (connections, per-subscriber queue, write deadline). */
  readonly eventStream?: Omit<EventStreamOptions, "events">
  /** Called once every service listens, with their live counters (for the daemon's status replies and tests). */
  readonly onStart?: (services: BuiltInServices) => void
}

export interface BuiltInServices {
  readonly echo: { readonly stats: () => EchoStats }
  readonly dataExchange: { readonly stats: () => DataExchangeStats }
  readonly eventStream: { readonly stats: () => EventStreamStats }
}

export const defaultDataDirectory = () => nodePath.join(os.homedir(), ".pilot")

/** Starts every built-in service on `transport` in the current scope. */
export const serveBuiltInServices = Effect.fnUntraced(function*(transport: Transport, options: BuiltInServicesOptions) {
  const echo = yield* serveEcho(transport)
  const dataExchange = yield* serveDataExchange(transport, {
    ...options.dataExchange,
    dataDirectory: options.dataDirectory ?? defaultDataDirectory(),
    events: options.events
  }).pipe(Effect.provide(localFileSystem))
  const eventStream = yield* serveEventStream(transport, { ...options.eventStream, events: options.events })
  const services: BuiltInServices = { echo, dataExchange, eventStream }
  options.onStart?.(services)
  return services
})

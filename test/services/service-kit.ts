/**
 * Two data planes on loopback (real UDP, encrypted tunnel) for the service tests, with the built-in services'
 * counters captured, plus small clients of the data-exchange and event-stream wire formats.
 */
import { assert } from "@effect/vitest"
import { Effect, Result } from "effect"
import type * as NetAddress from "effect/net/NetAddress"
import { Identity } from "../../src/crypto/identity.ts"
import { makeDataPlane } from "../../src/daemon/data-plane.ts"
import { type DataFrame, encodeDataFrame, makeDataFrameSplitter } from "../../src/protocol/data-exchange.ts"
import { encodeEvent, makeEventSplitter, type StreamEvent } from "../../src/protocol/event-stream.ts"
import type { BuiltInServices, BuiltInServicesOptions } from "../../src/services/built-in.ts"
import type { Connection } from "../../src/transport/transport.ts"

export const A = 1
export const B = 2

export interface Directory {
  readonly keys: Map<number, Uint8Array>
  readonly endpoints: Map<number, NetAddress.InetAddress>
}

export const newDirectory = (): Directory => ({ keys: new Map(), endpoints: new Map() })

export const startPlane = (directory: Directory, nodeId: number, services: BuiltInServicesOptions = {}) =>
  Effect.gen(function*() {
    const identity = Identity.generate()
    directory.keys.set(nodeId, identity.publicKey)
    let running: BuiltInServices | undefined
    const plane = yield* makeDataPlane({
      identity,
      nodeId,
      bind: { host: "127.0.0.1", port: 0 },
      registryKey: (node) => Effect.succeed(directory.keys.get(node)),
      endpointOf: (node) => Effect.succeed(directory.endpoints.get(node)),
      services: { ...services, onStart: (s) => (running = s) }
    })
    directory.endpoints.set(nodeId, plane.tunnel.address)
    yield* Effect.forkScoped(plane.failure)
    assert.isDefined(running)
    return { plane, services: running! }
  })

export const dataFrame = (frame: DataFrame): Uint8Array => {
  const encoded = encodeDataFrame(frame)
  if (Result.isFailure(encoded)) throw encoded.failure
  return encoded.success
}

export const streamEvent = (event: StreamEvent): Uint8Array => {
  const encoded = encodeEvent(event)
  if (Result.isFailure(encoded)) throw encoded.failure
  return encoded.success
}

const text = new TextDecoder()

/** Reads data-exchange frames off `connection`; `next` returns the next reply as text (undefined at end). */
export const frameReader = (connection: Connection) => {
  const splitter = makeDataFrameSplitter()
  const ready: Array<DataFrame> = []
  const next: Effect.Effect<string | undefined, unknown> = Effect.gen(function*() {
    while (ready.length === 0) {
      const chunk = yield* connection.read
      if (chunk === undefined) return undefined
      const frames = splitter.push(chunk)
      if (Result.isFailure(frames)) return yield* Effect.fail(frames.failure)
      ready.push(...frames.success)
    }
    return text.decode(ready.shift()!.payload)
  })
  return { next: next.pipe(Effect.timeout("20 seconds")) }
}

/** Reads events off a subscriber's connection. */
export const eventReader = (connection: Connection) => {
  const splitter = makeEventSplitter()
  const ready: Array<StreamEvent> = []
  const next: Effect.Effect<StreamEvent | undefined, unknown> = Effect.gen(function*() {
    while (ready.length === 0) {
      const chunk = yield* connection.read
      if (chunk === undefined) return undefined
      const events = splitter.push(chunk)
      if (Result.isFailure(events)) return yield* Effect.fail(events.failure)
      ready.push(...events.success)
    }
    return ready.shift()!
  })
  return { next }
}

/** Polls `condition` until it holds (every 10 ms, up to `timeoutMs` of real time). */
export const eventually = (what: string, condition: () => boolean, timeoutMs = 10_000) =>
  Effect.gen(function*() {
    const giveUp = Date.now() + timeoutMs
    while (!condition()) {
      if (Date.now() > giveUp) return yield* Effect.die(new Error(`timed out waiting for: ${what}`))
      yield* Effect.sleep("10 millis")
    }
  })

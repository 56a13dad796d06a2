/**
 * The event-stream service on port 1002 (reference §11): a tiny pub/sub broker. The first event on a connection
 * subscribes it to that event's topic (`*`: every topic); every later event is a publication, fanned out to the
 * subscribers of its topic and of `*`, never back to the connection that published it.
 *
 * The fan-out must not let one subscriber hurt the others or the publisher: each subscriber has a bounded
 * outbound queue and its own writer fiber. A publication is offered to every queue without waiting; a subscriber
 * whose queue is full (it reads slower than events come) is removed and its connection reset, counted as
 * `slow_removed`; one whose write fails or stalls past `writeTimeout` is removed the same way (`dead_removed`).
 * The publisher never waits for a subscriber.
 *
 * Connections run in a `FiberSet` (at most `maxConnections`; more are reset and counted); the subscription
 * event must arrive within `subscribeTimeout`, after which a connection may stay silent (subscribers usually are).
 */
import { type Duration, Deferred, Effect, Fiber, Queue, Result } from "effect"
import type { EventBus } from "../events/event-bus.ts"
import { formatAddr } from "../protocol/address.ts"
import { ALL_TOPICS, encodeEvent, makeEventSplitter, type StreamEvent } from "../protocol/event-stream.ts"
import type { Connection, Transport } from "../transport/transport.ts"
import { forkAcceptLoop } from "./accept-loop.ts"

export const EVENT_STREAM_PORT = 1002

export interface EventStreamOptions {
  readonly events?: EventBus | undefined
  /** Connections served at once (default 256). */
  readonly maxConnections?: number
  /** Outbound events queued per subscriber before it counts as slow (default 256). */
  readonly queueCapacity?: number
  /** One write to a subscriber may take this long before it counts as dead (default 10 s). */
  readonly writeTimeout?: Duration.Input
  /** The subscription event must arrive within this (default 30 s). */
  readonly subscribeTimeout?: Duration.Input
}

export interface EventStreamStats {
  readonly connections: number
  readonly rejected: number
  readonly subscribers: number
  readonly published: number
  readonly delivered: number
  readonly slow_removed: number
  readonly dead_removed: number
  readonly malformed: number
  readonly failures: number
}

interface Subscriber {
  readonly id: number
  readonly topic: string
  /** Encoded events waiting for this subscriber's writer. */
  readonly queue: Queue.Queue<Uint8Array>
  /** Completed when the subscriber must go (slow or dead): its connection fiber then resets it. */
  readonly kicked: Deferred.Deferred<void>
}

class SubscribeTimeout {
  readonly _tag = "SubscribeTimeout"
}

export const serveEventStream = Effect.fnUntraced(function*(transport: Transport, options: EventStreamOptions = {}) {
  const maxConnections = options.maxConnections ?? 256
  const capacity = options.queueCapacity ?? 256
  const writeTimeout = options.writeTimeout ?? "10 seconds"
  const subscribeTimeout = options.subscribeTimeout ?? "30 seconds"
  const listener = yield* transport.listen(EVENT_STREAM_PORT)
  const subscribers = new Map<number, Subscriber>()
  const stats = { connections: 0, active: 0, rejected: 0, published: 0, delivered: 0, slow_removed: 0, dead_removed: 0, malformed: 0, failures: 0 }

  const publishEvent = (name: string, data: { readonly [key: string]: unknown }) =>
    options.events === undefined ? Effect.void : options.events.publish(name, data)

  const kick = (subscriber: Subscriber, reason: "slow" | "dead") => {
    if (!subscribers.delete(subscriber.id)) return
    if (reason === "slow") stats.slow_removed++
    else stats.dead_removed++
    Deferred.doneUnsafe(subscriber.kicked, Effect.void)
  }

  /** Offers to every matching subscriber but the publisher; never waits. */
  const fanOut = (event: StreamEvent, publisherId: number) => {
    const encoded = encodeEvent(event)
    if (Result.isFailure(encoded)) return 0
    let reached = 0
    for (const subscriber of [...subscribers.values()]) {
      if (subscriber.id === publisherId) continue
      if (subscriber.topic !== event.topic && subscriber.topic !== ALL_TOPICS) continue
      if (Queue.offerUnsafe(subscriber.queue, encoded.success)) reached++
      else kick(subscriber, "slow")
    }
    return reached
  }

  const writer = (connection: Connection, subscriber: Subscriber) =>
    Effect.forever(Effect.gen(function*() {
      const bytes = yield* Queue.take(subscriber.queue)
      yield* connection.write(bytes).pipe(Effect.timeout(writeTimeout))
      stats.delivered++
    })).pipe(Effect.catch(() => Effect.sync(() => kick(subscriber, "dead"))))

  const serve = (connection: Connection) =>
    Effect.gen(function*() {
      const id = connection.id
      const from = formatAddr(connection.remote)
      const splitter = makeEventSplitter()
      const pending: Array<StreamEvent> = []
      const readEvents = (deadline: Duration.Input | undefined) =>
        Effect.gen(function*() {
          while (pending.length === 0) {
            const read = deadline === undefined
              ? connection.read
              : connection.read.pipe(Effect.timeoutOrElse({ duration: deadline, orElse: () => Effect.fail(new SubscribeTimeout()) }))
            const chunk = yield* read
            if (chunk === undefined) return false
            const events = splitter.push(chunk)
            if (Result.isFailure(events)) {
              stats.malformed++
              return yield* Effect.fail(events.failure)
            }
            pending.push(...events.success)
          }
          return true
        })

      if (!(yield* readEvents(subscribeTimeout))) return yield* connection.close
      const first = pending.shift()!
      const subscriber: Subscriber = { id, topic: first.topic, queue: yield* Queue.bounded<Uint8Array>(capacity), kicked: yield* Deferred.make<void>() }
      subscribers.set(id, subscriber)
      yield* publishEvent("pubsub.subscribed", { topic: first.topic, from })
      const writing = yield* Effect.forkChild(writer(connection, subscriber))
      const publications = Effect.gen(function*() {
        while (true) {
          if (pending.length === 0 && !(yield* readEvents(undefined))) return "closed" as const
          const event = pending.shift()!
          stats.published++
          const reached = fanOut(event, id)
          yield* publishEvent("pubsub.published", { topic: event.topic, from, bytes: event.payload.byteLength, subscribers: reached })
        }
      })
      const outcome = yield* Effect.raceFirst(publications, Effect.as(Deferred.await(subscriber.kicked), "kicked" as const)).pipe(
        Effect.ensuring(Effect.suspend(() => {
          subscribers.delete(id)
          return Effect.andThen(Fiber.interrupt(writing), publishEvent("pubsub.unsubscribed", { topic: first.topic, from }))
        }))
      )
      yield* outcome === "kicked" ? connection.abort : connection.close
    }).pipe(
      Effect.catch((error) => Effect.andThen(Effect.sync(() => error._tag === "DecodeError" ? undefined : stats.failures++), connection.abort)),
      Effect.onInterrupt(() => connection.abort)
    )

  yield* forkAcceptLoop(listener, stats, maxConnections, serve)
  return {
    stats: (): EventStreamStats => ({
      connections: stats.connections,
      rejected: stats.rejected,
      subscribers: subscribers.size,
      published: stats.published,
      delivered: stats.delivered,
      slow_removed: stats.slow_removed,
      dead_removed: stats.dead_removed,
      malformed: stats.malformed,
      failures: stats.failures
    })
  }
})

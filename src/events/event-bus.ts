/**
 * The daemon's in-process event bus (reference §11: "an in-process event bus; webhook is a plugin subscriber").
 * Components publish what happened — `tunnel.established`, `handshake.received`, `trust.changed`,
 * `message.received`, `file.received`, `pubsub.published`, `daemon.shutting_down`, … — and subscribers (the
 * webhook, tests, later the IPC) consume it.
 *
 * Publishing sits on hot paths (the tunnel's receive path, a service's connection fiber), so it never blocks and
 * never fails: each subscriber has its own bounded queue, a full queue drops the NEWEST event for that subscriber
 * only and counts it, and a slow subscriber therefore costs nobody else anything. A subscription lives in the
 * subscriber's scope; the bus itself lives in the daemon's, and when it closes every subscription ends (`take`
 * fails with `Cause.Done` once the events already queued are consumed).
 */
import { type Cause, Clock, Effect, Queue, type Scope } from "effect"

/** Event names of reference §11 that pilotfish publishes today (any string is accepted). */
export type EventName =
  | "tunnel.peer_added"
  | "tunnel.established"
  | "handshake.received"
  | "handshake.pending"
  | "handshake.approved"
  | "handshake.rejected"
  | "handshake.auto_approved"
  | "trust.changed"
  | "trust.revoked"
  | "trust.revoked_by_peer"
  | "message.received"
  | "file.received"
  | "pubsub.subscribed"
  | "pubsub.unsubscribed"
  | "pubsub.published"
  | "daemon.shutting_down"
  | (string & {})

export interface DaemonEvent {
  readonly name: EventName
  readonly data: { readonly [key: string]: unknown }
  /** Unix milliseconds when it was published. */
  readonly timestampMs: number
}

export const DEFAULT_SUBSCRIBER_CAPACITY = 1024

export interface Subscription {
  /** The next event; fails with `Cause.Done` once the subscription or the bus closed and the queue is empty. */
  readonly take: Effect.Effect<DaemonEvent, Cause.Done>
  /** Events queued and not taken yet. */
  readonly size: () => number
  /** Events this subscriber lost because its queue was full. */
  readonly dropped: () => number
  /** Stops receiving new events; those already queued can still be taken. Idempotent. */
  readonly close: Effect.Effect<void>
}

export interface EventBusStats {
  readonly published: number
  readonly subscribers: number
  /** Events lost across all subscribers (each full subscriber queue counts once per event). */
  readonly dropped: number
}

export interface EventBus {
  /** Never blocks, never fails. */
  readonly publish: (name: EventName, data?: DaemonEvent["data"]) => Effect.Effect<void>
  /** The same, for synchronous callers (a receive path, a Node callback). */
  readonly publishUnsafe: (name: EventName, data?: DaemonEvent["data"]) => void
  /** Subscribes until the caller's scope closes; `filter` picks events by name (default: all). */
  readonly subscribe: (options?: {
    readonly capacity?: number
    readonly filter?: (name: EventName) => boolean
  }) => Effect.Effect<Subscription, never, Scope.Scope>
  readonly stats: () => EventBusStats
}

interface Subscriber {
  readonly queue: Queue.Queue<DaemonEvent, Cause.Done>
  readonly filter: (name: EventName) => boolean
  dropped: number
}

/** A bus living in the current scope. */
export const makeEventBus: Effect.Effect<EventBus, never, Scope.Scope> = Effect.gen(function*() {
  const clock = yield* Clock.Clock
  const subscribers = new Set<Subscriber>()
  const counters = { published: 0, dropped: 0 }

  const publishUnsafe = (name: EventName, data: DaemonEvent["data"] = {}) => {
    counters.published++
    if (subscribers.size === 0) return
    const event: DaemonEvent = { name, data, timestampMs: clock.currentTimeMillisUnsafe() }
    for (const subscriber of subscribers) {
      if (!subscriber.filter(name)) continue
      if (!Queue.offerUnsafe(subscriber.queue, event)) {
        subscriber.dropped++
        counters.dropped++
      }
    }
  }

  const end = (subscriber: Subscriber) =>
    Effect.sync(() => {
      subscribers.delete(subscriber)
      Queue.endUnsafe(subscriber.queue)
    })

  yield* Effect.addFinalizer(() => Effect.forEach([...subscribers], end, { discard: true }))

  const subscribe: EventBus["subscribe"] = (options) =>
    Effect.gen(function*() {
      const queue = yield* Queue.dropping<DaemonEvent, Cause.Done>(options?.capacity ?? DEFAULT_SUBSCRIBER_CAPACITY)
      const subscriber: Subscriber = { queue, filter: options?.filter ?? (() => true), dropped: 0 }
      subscribers.add(subscriber)
      yield* Effect.addFinalizer(() => end(subscriber).pipe(Effect.andThen(Queue.shutdown(queue))))
      const subscription: Subscription = {
        take: Queue.take(queue),
        size: () => Queue.sizeUnsafe(queue),
        dropped: () => subscriber.dropped,
        close: end(subscriber)
      }
      return subscription
    })

  return {
    publish: (name, data) => Effect.sync(() => publishUnsafe(name, data)),
    publishUnsafe,
    subscribe,
    stats: () => ({ ...counters, subscribers: subscribers.size })
  }
})

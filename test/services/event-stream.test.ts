/**
 * The event-stream service on port 1002 between two data planes on loopback: fan-out to the topic's and `*`'s
 * subscribers, never back to the publisher, and a subscriber that stops reading removed while the others keep
 * receiving. Every test ends with the lifecycle check.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { makeEventBus } from "../../src/events/event-bus.ts"
import { EVENT_STREAM_PORT } from "../../src/services/event-stream.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { A, B, eventReader, eventually, newDirectory, startPlane, streamEvent } from "./service-kit.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const ev = (topic: string, payload: string) => streamEvent({ topic, payload: encoder.encode(payload) })

describe("event stream on port 1002", () => {
  it.live("a publication reaches the topic's and *'s subscribers, not other topics, never the publisher", () =>
    expectNoLeaks(Effect.gen(function*() {
      const bus = yield* makeEventBus
      const seen = yield* bus.subscribe({ filter: (name) => name.startsWith("pubsub.") })
      const directory = newDirectory()
      const a = yield* startPlane(directory, A)
      const b = yield* startPlane(directory, B, { events: bus })
      const dial = a.plane.transport.dial({ network: 0, node: B }, EVENT_STREAM_PORT)

      const news = yield* dial
      yield* news.write(ev("news", ""))
      const all = yield* dial
      yield* all.write(ev("*", ""))
      const other = yield* dial
      yield* other.write(ev("sport", ""))
      yield* eventually("three subscribers", () => b.services.eventStream.stats().subscribers === 3)

      // The publisher's own subscription is to "news" too: it must not hear itself.
      const publisher = yield* dial
      yield* publisher.write(ev("news", ""))
      yield* eventually("four subscribers", () => b.services.eventStream.stats().subscribers === 4)
      const publisherReads = yield* Effect.forkChild(Effect.exit(eventReader(publisher).next))
      yield* publisher.write(ev("news", "headline 1"))
      yield* publisher.write(ev("sport", "score"))

      const newsEvents = eventReader(news)
      const first = (yield* newsEvents.next)!
      assert.deepStrictEqual([first.topic, decoder.decode(first.payload)], ["news", "headline 1"])
      const allEvents = eventReader(all)
      const got = [(yield* allEvents.next)!, (yield* allEvents.next)!].map((e) => `${e.topic}:${decoder.decode(e.payload)}`)
      assert.deepStrictEqual(got, ["news:headline 1", "sport:score"])
      const sport = (yield* eventReader(other).next)!
      assert.deepStrictEqual([sport.topic, decoder.decode(sport.payload)], ["sport", "score"])

      // The publisher closes its side: nothing was ever sent to it, and the server closes too.
      yield* publisher.close
      const publisherOutcome = yield* Fiber.join(publisherReads)
      assert.isTrue(Exit.isSuccess(publisherOutcome) && publisherOutcome.value === undefined)
      const stats = b.services.eventStream.stats()
      assert.strictEqual(stats.published, 2)
      assert.strictEqual(stats.delivered, 4) // news 1, * 2, sport 1
      yield* eventually("publisher unsubscribed", () => b.services.eventStream.stats().subscribers === 3)
      const names: Array<string> = []
      while (seen.size() > 0) names.push((yield* seen.take).name)
      assert.includeMembers(names, ["pubsub.subscribed", "pubsub.published", "pubsub.unsubscribed"])
    })), 60_000)

  it.live("a subscriber that stops reading is removed; the publisher and the other subscriber go on", () =>
    expectNoLeaks(Effect.gen(function*() {
      const directory = newDirectory()
      const a = yield* startPlane(directory, A)
      const b = yield* startPlane(directory, B, { eventStream: { queueCapacity: 8, writeTimeout: "2 seconds" } })
      const dial = a.plane.transport.dial({ network: 0, node: B }, EVENT_STREAM_PORT)
      // Never reads, with a small receive window: its window closes, the server's send buffer fills, then its queue.
      const stalled = yield* a.plane.transport.dial({ network: 0, node: B }, EVENT_STREAM_PORT, { receiveBufferBytes: 64 * 1024 })
      yield* stalled.write(ev("t", ""))
      const reader = yield* dial
      yield* reader.write(ev("t", ""))
      yield* eventually("two subscribers", () => b.services.eventStream.stats().subscribers === 2)
      const publisher = yield* dial
      yield* publisher.write(ev("p", ""))

      // Lockstep: each publication is read by the live subscriber before the next, so only the stalled one lags.
      const payload = "x".repeat(16 * 1024)
      const events = eventReader(reader)
      const total = 60
      for (let i = 0; i < total; i++) {
        yield* publisher.write(ev("t", `${i} ${payload}`))
        const event = (yield* events.next.pipe(Effect.timeout("20 seconds")))!
        assert.strictEqual(decoder.decode(event.payload).split(" ")[0], String(i))
      }
      const stats = b.services.eventStream.stats()
      assert.strictEqual(stats.slow_removed + stats.dead_removed, 1)
      assert.strictEqual(stats.published, total)
      yield* eventually("stalled subscriber gone", () => b.services.eventStream.stats().subscribers === 2) // reader + publisher
      const kicked = yield* Effect.exit(Effect.gen(function*() {
        while (true) if ((yield* stalled.read) === undefined) return "closed"
      }).pipe(Effect.timeout("20 seconds")))
      assert.isTrue(Exit.isFailure(kicked), "the stalled subscriber's connection was reset")
    })), 90_000)
})

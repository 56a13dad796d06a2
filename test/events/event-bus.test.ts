/**
 * The in-process event bus: publishing never blocks or fails, a full subscriber loses the newest events (counted)
 * without touching the others, subscriptions end with their scope and with the bus.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Scope } from "effect"
import { TestClock } from "effect/testing"
import { makeEventBus } from "../../src/events/event-bus.ts"
import { expectNoLeaks } from "../support/leak-check.ts"

describe("event bus", () => {
  it.effect("a full subscriber drops the newest events, counted; publish never blocks; others unaffected", () =>
    expectNoLeaks(Effect.gen(function*() {
      const bus = yield* makeEventBus
      const stuck = yield* bus.subscribe({ capacity: 2 })
      const live = yield* bus.subscribe({ capacity: 1000 })
      yield* TestClock.adjust("5 seconds")
      for (let i = 0; i < 500; i++) bus.publishUnsafe("message.received", { i })
      yield* bus.publish("file.received", { i: 500 })
      assert.strictEqual(stuck.dropped(), 499)
      assert.strictEqual(live.dropped(), 0)
      assert.deepStrictEqual(bus.stats(), { published: 501, subscribers: 2, dropped: 499 })
      const first = yield* stuck.take
      assert.deepStrictEqual(first, { name: "message.received", data: { i: 0 }, timestampMs: 5000 })
      assert.deepStrictEqual((yield* stuck.take).data, { i: 1 })
      assert.strictEqual(live.size(), 501)
    })))

  it.effect("filters pick events by name; a closed subscription is drained then Done; scopes unsubscribe", () =>
    expectNoLeaks(Effect.gen(function*() {
      const bus = yield* makeEventBus
      const files = yield* bus.subscribe({ filter: (name) => name === "file.received" })
      const scope = yield* Scope.make()
      yield* bus.subscribe().pipe(Scope.provide(scope))
      assert.strictEqual(bus.stats().subscribers, 2)
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual(bus.stats().subscribers, 1)
      bus.publishUnsafe("message.received")
      bus.publishUnsafe("file.received", { name: "a" })
      yield* files.close
      bus.publishUnsafe("file.received", { name: "b" })
      assert.deepStrictEqual((yield* files.take).data, { name: "a" })
      const after = yield* Effect.exit(files.take)
      assert.isTrue(Exit.isFailure(after) && Cause.hasFails(after.cause))
      assert.strictEqual(bus.stats().subscribers, 0)
    })))

  it.effect("closing the bus ends every subscription", () =>
    expectNoLeaks(Effect.gen(function*() {
      const busScope = yield* Scope.make()
      const bus = yield* makeEventBus.pipe(Scope.provide(busScope))
      const subscription = yield* bus.subscribe()
      const waiting = yield* Effect.forkChild(Effect.exit(subscription.take))
      yield* Scope.close(busScope, Exit.void)
      const exit = yield* Fiber.join(waiting)
      assert.isTrue(Exit.isFailure(exit) && Cause.hasFails(exit.cause), "take ended with Done")
      bus.publishUnsafe("daemon.shutting_down")
      assert.strictEqual(bus.stats().subscribers, 0)
    })))
})

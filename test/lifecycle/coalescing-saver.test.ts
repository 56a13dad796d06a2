import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Fiber, Latch, Ref, Scope } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import { makeCoalescingSaver } from "../../src/lifecycle/coalescing-saver.ts"
import { makeLogCapture } from "../support/log-capture.ts"

class DiskFull extends Error {}

/** An in-memory "disk" whose writes can be made to fail or to hang, recording every successful write. */
const makeDisk = Effect.gen(function*() {
  const writes = yield* Ref.make<Array<string>>([])
  const failNext = yield* Ref.make(0)
  const gate = yield* Latch.make(true)
  const write = (data: Uint8Array | string) =>
    Effect.gen(function*() {
      yield* gate.await
      const fail = yield* Ref.getAndUpdate(failNext, (n) => Math.max(0, n - 1))
      if (fail > 0) return yield* Effect.fail(new DiskFull("disk full"))
      yield* Ref.update(writes, (w) => [...w, String(data)])
    })
  return { writes, failNext, gate, write }
})

const setup = (debounce?: Duration.Input) =>
  Effect.gen(function*() {
    const disk = yield* makeDisk
    const state = { value: 0 }
    const scope = yield* Scope.make()
    const saver = yield* makeCoalescingSaver({
      name: "test",
      snapshot: Effect.sync(() => String(state.value)),
      write: disk.write,
      ...(debounce === undefined ? {} : { debounce }),
      finalSaveTimeout: "2 seconds"
    }).pipe(Scope.provide(scope))
    const mutate = (v: number) => {
      state.value = v
      saver.markDirty()
    }
    return { disk, state, scope, saver, mutate }
  })

describe("coalescing saver", () => {
  it.effect("a burst of mutations becomes one write of the latest state", () =>
    Effect.gen(function*() {
      const { disk, saver, mutate } = yield* setup("1 second")
      for (let i = 1; i <= 50; i++) mutate(i)
      yield* TestClock.adjust("999 millis")
      assert.deepStrictEqual(yield* Ref.get(disk.writes), [])
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* Ref.get(disk.writes), ["50"])
      assert.deepStrictEqual(yield* saver.stats, { saves: 1, failures: 0, unsaved: false })
    }))

  it.effect("markDirty returns at once while a write is stuck on the disk", () =>
    Effect.gen(function*() {
      const { disk, saver, mutate } = yield* setup()
      yield* disk.gate.close
      mutate(1)
      yield* TestClock.adjust("10 millis")
      for (let i = 2; i <= 1000; i++) mutate(i) // would hang the test if a mutation waited for the disk
      assert.isTrue((yield* saver.stats).unsaved)
      yield* disk.gate.open
      yield* saver.flush
      assert.strictEqual((yield* Ref.get(disk.writes)).at(-1), "1000")
    }))

  it.effect("a failed write is retried, counted and logged, and the state stays dirty until it lands", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const { disk, saver, mutate } = yield* setup()
      yield* Ref.set(disk.failNext, 2)
      mutate(7)
      yield* TestClock.adjust("1 millis")
      assert.deepStrictEqual(yield* saver.stats, { saves: 0, failures: 1, unsaved: true })
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(yield* saver.stats, { saves: 1, failures: 2, unsaved: false })
      assert.deepStrictEqual(yield* Ref.get(disk.writes), ["7"])
      const warnings = logs.at("Warn")
      assert.strictEqual(warnings.length, 2)
      assert.include(warnings[0]!.text, "disk full")
      assert.strictEqual(warnings[0]!.annotations["saver"], "test")
    }).pipe(Effect.provide(logs.layer))
  })

  it.effect("closing the scope saves what is unsaved and stops the saver fiber", () =>
    Effect.gen(function*() {
      const { disk, scope, mutate } = yield* setup("1 second")
      mutate(1)
      mutate(2)
      yield* Scope.close(scope, Exit.void) // before the debounce elapsed
      assert.deepStrictEqual(yield* Ref.get(disk.writes), ["2"])
      mutate(3) // after close nothing runs: no fiber is left to save
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(yield* Ref.get(disk.writes), ["2"])
    }))

  it.effect("a write in flight at shutdown is waited for, never abandoned, and the final save lands after it", () =>
    Effect.gen(function*() {
      const { disk, scope, mutate } = yield* setup()
      yield* disk.gate.close
      mutate(1)
      yield* TestClock.adjust("1 millis") // the saver is now inside the write of "1", stuck on the disk
      mutate(2)
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("10 millis")
      assert.isUndefined(closing.pollUnsafe()) // shutdown waits for the write in flight
      yield* disk.gate.open
      yield* Fiber.join(closing)
      // An abandoned write could land after the final save and put "1" back over "2".
      assert.deepStrictEqual(yield* Ref.get(disk.writes), ["1", "2"])
    }))

  it.effect("closing the scope with nothing unsaved writes nothing", () =>
    Effect.gen(function*() {
      const { disk, scope, mutate } = yield* setup()
      mutate(1)
      yield* TestClock.adjust("1 millis")
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(yield* Ref.get(disk.writes), ["1"])
    }))

  it.effect("a final save that hangs is cut at its deadline, reported, and shutdown finishes", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const { disk, scope, saver, mutate } = yield* setup()
      yield* disk.gate.close
      mutate(1)
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("1999 millis")
      assert.isUndefined(closing.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(closing)
      assert.isTrue((yield* saver.stats).unsaved)
      assert.include(logs.at("Error")[0]?.message, "final save failed")
    }).pipe(Effect.provide(logs.layer))
  })

  it("property: whatever the mutations, failures and timing, the disk holds the state at shutdown", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant("mutate" as const), value: fc.integer() }),
            fc.record({ op: fc.constant("advance" as const), millis: fc.integer({ min: 0, max: 3000 }) }),
            fc.record({ op: fc.constant("fail" as const), count: fc.integer({ min: 1, max: 3 }) })
          ),
          { maxLength: 40 }
        ),
        fc.boolean(),
        (steps, debounced) =>
          Effect.gen(function*() {
            const { disk, state, scope, mutate } = yield* setup(debounced ? "500 millis" : undefined)
            let mutated = false
            for (const step of steps) {
              if (step.op === "mutate") {
                mutate(step.value)
                mutated = true
              } else if (step.op === "advance") yield* TestClock.adjust(step.millis)
              else yield* Ref.set(disk.failNext, step.count)
            }
            // The final save gets one attempt: clear injected failures so the property is about ordering.
            yield* Ref.set(disk.failNext, 0)
            yield* Scope.close(scope, Exit.void)
            const writes = yield* Ref.get(disk.writes)
            if (mutated) assert.strictEqual(writes.at(-1), String(state.value))
            else assert.deepStrictEqual(writes, [])
          }).pipe(Effect.provide([TestClock.layer(), makeLogCapture().layer]), Effect.scoped, Effect.runPromise)
      ),
      { numRuns: 200 }
    )
  })
})

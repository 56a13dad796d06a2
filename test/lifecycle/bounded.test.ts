import { assert, describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Data, Duration, Effect, Exit, Fiber, Ref, Scope } from "effect"
import { TestClock } from "effect/testing"
import { addBoundedFinalizer, boundedStep, StepRecorder } from "../../src/lifecycle/bounded.ts"
import type { StepOutcome } from "../../src/lifecycle/bounded.ts"
import { makeLogCapture } from "../support/log-capture.ts"

class DeregisterFailed extends Data.TaggedError("DeregisterFailed")<{ readonly registry: string }> {
  override get message(): string {
    return `registry ${this.registry} unreachable`
  }
}

/** A journal of events stamped with virtual time, and a StepRecorder feeding it. */
const makeJournal = Effect.gen(function*() {
  const events = yield* Ref.make<ReadonlyArray<string>>([])
  const outcomes = yield* Ref.make<ReadonlyArray<StepOutcome>>([])
  const note = (event: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.update(events, (all) => [...all, `${now}ms ${event}`]))
  const recorder = (outcome: StepOutcome) => Ref.update(outcomes, (all) => [...all, outcome])
  return { note, recorder, events: Ref.get(events), outcomes: Ref.get(outcomes) }
})

const summary = (outcome: StepOutcome) => [outcome._tag, outcome.step, Duration.toMillis(outcome.elapsed)]

describe("addBoundedFinalizer", () => {
  it.effect("a step that overruns is cut at its deadline, a Warning names it, and later steps still run", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const logs = makeLogCapture()
      const scope = yield* Scope.make()
      // Finalizers run last-in first-out: "deregister" runs first, then "close sockets".
      yield* addBoundedFinalizer("close sockets", "1 second", journal.note("sockets closed")).pipe(
        Scope.provide(scope),
        Effect.provideService(StepRecorder, journal.recorder),
        Effect.provide(logs.layer)
      )
      yield* addBoundedFinalizer(
        "deregister",
        "3 seconds",
        Effect.sleep("1 minute").pipe(Effect.onInterrupt(() => journal.note("deregister cut")))
      ).pipe(Scope.provide(scope), Effect.provideService(StepRecorder, journal.recorder), Effect.provide(logs.layer))

      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("2999 millis")
      expect(closing.pollUnsafe()).toBeUndefined() // still inside the deadline: the step is waited for
      yield* TestClock.adjust("1 milli")
      yield* Fiber.join(closing)

      expect(yield* journal.events).toEqual(["3000ms deregister cut", "3000ms sockets closed"])
      expect((yield* journal.outcomes).map(summary)).toEqual([
        ["TimedOut", "deregister", 3000],
        ["Completed", "close sockets", 0]
      ])
      const warnings = logs.at("Warn")
      expect(warnings.map((w) => w.annotations)).toEqual([{ step: "deregister", deadline: "3s" }])
      expect(warnings[0]?.message).toContain(`shutdown step "deregister" overran its deadline of 3s`)
      expect(logs.entries).toHaveLength(1)
    }))

  it.effect("a failing step is contained: logged with its cause, the scope still closes and later steps run", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const logs = makeLogCapture()
      const exit = yield* Effect.exit(Effect.scoped(Effect.gen(function*() {
        yield* addBoundedFinalizer("remove socket file", "1 second", journal.note("socket file removed"))
        yield* addBoundedFinalizer("trust save", "1 second", Effect.die(new Error("disk on fire")))
        yield* addBoundedFinalizer("deregister", "1 second", new DeregisterFailed({ registry: "10.0.0.1:9000" }))
      })).pipe(Effect.provideService(StepRecorder, journal.recorder), Effect.provide(logs.layer)))

      assert.isTrue(Exit.isSuccess(exit))
      expect(yield* journal.events).toEqual(["0ms socket file removed"])
      const outcomes = yield* journal.outcomes
      expect(outcomes.map(summary)).toEqual([
        ["Failed", "deregister", 0],
        ["Failed", "trust save", 0],
        ["Completed", "remove socket file", 0]
      ])
      const [deregister, trustSave] = outcomes
      assert.isTrue(deregister?._tag === "Failed" && Cause.hasFails(deregister.cause))
      assert.isTrue(trustSave?._tag === "Failed" && Cause.hasDies(trustSave.cause))

      const warnings = logs.at("Warn")
      expect(warnings.map((w) => w.annotations.step)).toEqual(["deregister", "trust save"])
      expect(warnings[0]?.text).toContain("registry 10.0.0.1:9000 unreachable")
      expect(warnings[1]?.text).toContain("disk on fire")
    }))
})

describe("boundedStep", () => {
  it.effect("a step that finishes in time logs nothing and reports Completed with its duration", () =>
    Effect.gen(function*() {
      const logs = makeLogCapture()
      const fiber = yield* boundedStep("flush", "5 seconds", Effect.sleep("2 seconds")).pipe(
        Effect.provide(logs.layer),
        Effect.forkChild
      )
      yield* TestClock.adjust("2 seconds")
      const outcome = yield* Fiber.join(fiber)
      expect(summary(outcome)).toEqual(["Completed", "flush", 2000])
      expect(Duration.toMillis(outcome.deadline)).toBe(5000)
      expect(logs.entries).toEqual([])
    }))

  it.effect("bounds an acquireRelease release", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const closing = yield* Effect.scoped(
        Effect.acquireRelease(
          Effect.void,
          () => boundedStep("close ipc", "3 seconds", Effect.never).pipe(Effect.tap(() => journal.note("released")))
        )
      ).pipe(Effect.provide(makeLogCapture().layer), Effect.forkChild)
      yield* TestClock.adjust("3 seconds")
      yield* Fiber.join(closing)
      expect(yield* journal.events).toEqual(["3000ms released"])
    }))

  it.effect("an interruption of the caller is not contained", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const fiber = yield* boundedStep("drain", "1 minute", Effect.never).pipe(
        Effect.provideService(StepRecorder, journal.recorder),
        Effect.forkChild
      )
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(fiber)
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause))
      expect(yield* journal.outcomes).toEqual([])
    }))
})

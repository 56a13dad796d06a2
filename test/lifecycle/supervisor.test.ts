import { assert, describe, expect, it } from "@effect/vitest"
import { Cause, Context, Data, Duration, Effect, Exit, Fiber, Layer, Ref, Runtime, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import {
  EssentialFiberFailed,
  supervise,
  superviseLayer,
  Supervisor
} from "../../src/lifecycle/supervisor.ts"
import { expectNoLeaks, LeakDetected } from "../support/leak-check.ts"
import { makeLogCapture } from "../support/log-capture.ts"

class Boom extends Data.TaggedError("Boom")<{ readonly detail: string }> {
  override get message(): string {
    return `boom: ${this.detail}`
  }
}

/** An ordered journal of lifecycle events shared by the fibers under test. */
const makeJournal = Effect.map(Ref.make<ReadonlyArray<string>>([]), (ref) => ({
  note: (event: string) => Ref.update(ref, (events) => [...events, event]),
  events: Ref.get(ref)
}))
type Journal = Effect.Success<typeof makeJournal>

type Stop = { readonly after: Duration.Input; readonly end: Effect.Effect<unknown, unknown> }

/**
 * A daemon-style loop: ticks every second forever, journals its interruption and its cleanup. `end` (if given)
 * is how it stops on its own after `after`.
 */
const loop = (
  journal: Journal,
  name: string,
  stop?: Stop
): Effect.Effect<unknown, unknown> => {
  const ticking = Effect.forever(Effect.sleep("1 second"))
  const body = stop === undefined ? ticking : Effect.raceFirst(ticking, Effect.andThen(Effect.sleep(stop.after), stop.end))
  return body.pipe(
    Effect.onInterrupt(() => journal.note(`${name} interrupted`)),
    Effect.ensuring(journal.note(`${name} cleaned`))
  )
}

/**
 * Runs `effect` in a fiber, moves virtual time by `elapse`, and returns the fiber's exit. The leak check proves the
 * supervisor left no fiber running behind it (a leak would surface as LeakDetected instead of the expected failure).
 */
const runFor = <A, E>(effect: Effect.Effect<A, E>, elapse: Duration.Input) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(expectNoLeaks(effect))
    yield* TestClock.adjust(elapse)
    return yield* Fiber.await(fiber)
  })

const failureOf = <A>(exit: Exit.Exit<A, EssentialFiberFailed | LeakDetected>): EssentialFiberFailed => {
  assert.isTrue(Exit.isFailure(exit), "expected the supervisor to fail")
  const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : undefined
  assert.isTrue(error?._tag === "Some", "expected a typed failure")
  const value = (error as { readonly value: EssentialFiberFailed | LeakDetected }).value
  assert.isTrue(value instanceof EssentialFiberFailed, `expected EssentialFiberFailed, got ${value.message}`)
  return value as EssentialFiberFailed
}

describe("supervise", () => {
  it.effect("the first failing fiber ends the whole; the others are interrupted and joined before it returns", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const logs = makeLogCapture()
      const exit = yield* runFor(
        supervise({
          udp: loop(journal, "udp"),
          ipc: loop(journal, "ipc", { after: "5 seconds", end: new Boom({ detail: "socket gone" }) }),
          health: loop(journal, "health")
        }).pipe(Effect.onExit(() => journal.note("supervisor returned")), Effect.provide(logs.layer)),
        "5 seconds"
      )

      const failure = failureOf(exit)
      expect(failure.fiber).toBe("ipc")
      expect(failure.reason).toBe("failed")
      expect(failure.code).toBe("essential_failed")
      expect(failure.message).toBe(`essential fiber "ipc" failed: boom: socket gone`)
      expect(Cause.findErrorOption(failure.cause)).toMatchObject({ value: { _tag: "Boom" } })

      const events = yield* journal.events
      expect(events.at(-1)).toBe("supervisor returned")
      expect(new Set(events.slice(0, -1))).toEqual(
        new Set(["ipc cleaned", "udp interrupted", "udp cleaned", "health interrupted", "health cleaned"])
      )
      expect(events).not.toContain("ipc interrupted")

      const errors = logs.at("Error")
      expect(errors).toHaveLength(1)
      expect(errors[0]?.annotations).toEqual({ fiber: "ipc" })
      expect(errors[0]?.text).toContain(`essential fiber "ipc" failed`)
      expect(errors[0]?.text).toContain("socket gone") // the cause, pretty-printed
    }))

  it.effect("a defect ends the whole with reason 'died'", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const logs = makeLogCapture()
      const exit = yield* runFor(
        supervise({
          udp: loop(journal, "udp", { after: "2 seconds", end: Effect.die(new Error("index out of range")) }),
          ipc: loop(journal, "ipc")
        }).pipe(Effect.onExit(() => journal.note("supervisor returned")), Effect.provide(logs.layer)),
        "2 seconds"
      )

      const failure = failureOf(exit)
      expect(failure).toMatchObject({ fiber: "udp", reason: "died", code: "essential_died" })
      expect(failure.message).toContain("index out of range")
      expect(yield* journal.events).toEqual(["udp cleaned", "ipc interrupted", "ipc cleaned", "supervisor returned"])
      expect(logs.at("Error").map((l) => [l.annotations.fiber, l.text.includes("index out of range")])).toEqual([
        ["udp", true]
      ])
    }))

  it.effect("an essential fiber that returns has stopped serving: reason 'exited'", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const exit = yield* runFor(
        supervise({
          accept: loop(journal, "accept", { after: "3 seconds", end: Effect.void }),
          ipc: loop(journal, "ipc")
        }).pipe(Effect.provide(makeLogCapture().layer)),
        "3 seconds"
      )
      const failure = failureOf(exit)
      expect(failure).toMatchObject({ fiber: "accept", reason: "exited", code: "essential_exited" })
      expect(failure.message).toBe(`essential fiber "accept" exited unexpectedly`)
      expect(yield* journal.events).toContain("ipc cleaned")
    }))

  it.effect("an essential fiber interrupted by anything but its owner's stop: reason 'interrupted'", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const exit = yield* runFor(
        supervise({
          reader: loop(journal, "reader", { after: "1 second", end: Effect.interrupt }),
          ipc: loop(journal, "ipc")
        }).pipe(Effect.provide(makeLogCapture().layer)),
        "1 second"
      )
      expect(failureOf(exit)).toMatchObject({ fiber: "reader", reason: "interrupted", code: "essential_interrupted" })
      expect(yield* journal.events).toContain("ipc cleaned")
    }))

  it.effect("external interruption (SIGTERM) interrupts and joins every fiber, and reports nothing", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const logs = makeLogCapture()
      const fiber = yield* supervise({ udp: loop(journal, "udp"), ipc: loop(journal, "ipc") }).pipe(
        Effect.provide(logs.layer),
        Effect.forkChild
      )
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.interrupt(fiber) // returns once the supervisor has ended
      yield* journal.note("interrupt returned")

      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause))
      const events = yield* journal.events
      expect(events.at(-1)).toBe("interrupt returned")
      expect(new Set(events)).toEqual(
        new Set(["udp interrupted", "udp cleaned", "ipc interrupted", "ipc cleaned", "interrupt returned"])
      )
      expect(logs.entries).toEqual([])
    }))

  it.effect("log lines written by an essential fiber are annotated with its name", () =>
    Effect.gen(function*() {
      const logs = makeLogCapture()
      const fiber = yield* supervise({ gossip: Effect.logInfo("hello").pipe(Effect.andThen(Effect.never)) }).pipe(
        Effect.provide(logs.layer),
        Effect.forkChild
      )
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(fiber)
      expect(logs.at("Info").map((l) => [l.message, l.annotations])).toEqual([["hello", { fiber: "gossip" }]])
    }))

  it("EssentialFiberFailed encodes for IPC/CLI output with its fiber, reason and cause", () => {
    const failure = new EssentialFiberFailed({ fiber: "udp", reason: "died", cause: Cause.die(new Error("bad state")) })
    const encoded = Schema.encodeUnknownSync(EssentialFiberFailed)(failure)
    expect(encoded).toMatchObject({ _tag: "EssentialFiberFailed", fiber: "udp", reason: "died" })
    expect(JSON.stringify(encoded)).toContain("bad state")
    expect(Runtime.getErrorReported(failure)).toBe(false) // already logged by the supervisor: runMain stays quiet
  })
})

// ---- layer-built apps

/** The discovery entry a publisher keeps fresh: must be retracted only after the publisher has stopped. */
class Discovery extends Context.Service<Discovery, { readonly entry: string }>()("test/Discovery") {}
class Notes extends Context.Service<Notes, Journal>()("test/Notes") {}

const DiscoveryLive = Layer.effect(
  Discovery,
  Effect.gen(function*() {
    const journal = yield* Notes
    yield* Effect.acquireRelease(journal.note("discovery written"), () => journal.note("discovery deleted"))
    return Discovery.of({ entry: "node-7" })
  })
)

/** A component's constructor: acquires its socket, then registers its essential loop (so the loop stops first). */
const startComponent = (name: string, stop?: Stop) =>
  Effect.gen(function*() {
    const journal = yield* Notes
    const supervisor = yield* Supervisor
    yield* Effect.acquireRelease(journal.note(`${name} socket open`), () => journal.note(`${name} socket closed`))
    yield* supervisor.essential(name, loop(journal, name, stop))
  })

/** Depends on Discovery, so it is built after it and torn down before it. */
const PublisherLive = Layer.effectDiscard(Effect.gen(function*() {
  yield* Discovery
  yield* startComponent("publisher")
})).pipe(Layer.provide(DiscoveryLive))

const app = (dataPlaneStop?: Stop) => Layer.mergeAll(PublisherLive, Layer.effectDiscard(startComponent("udp", dataPlaneStop)))

/** Asserts that every one of `expected` happened, in this order (other events may interleave). */
const expectInOrder = (events: ReadonlyArray<string>, expected: ReadonlyArray<string>) => {
  const positions = expected.map((event) => events.indexOf(event))
  expect(positions.every((p) => p >= 0), `missing some of ${JSON.stringify(expected)} in ${JSON.stringify(events)}`).toBe(true)
  expect(positions, `events out of order: ${JSON.stringify(events)}`).toEqual([...positions].sort((a, b) => a - b))
}

describe("Supervisor (layer-built apps)", () => {
  it.effect("a fiber failing inside a layer ends Supervisor.await; each component stops its fiber before its resources", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const logs = makeLogCapture()
      const exit = yield* runFor(
        superviseLayer(app({ after: "4 seconds", end: new Boom({ detail: "EBADF" }) })).pipe(
          Effect.onExit(() => journal.note("main returned")),
          Effect.provideService(Notes, journal),
          Effect.provide(logs.layer)
        ),
        "4 seconds"
      )

      expect(failureOf(exit)).toMatchObject({ fiber: "udp", reason: "failed" })
      const events = yield* journal.events
      expectInOrder(events, ["publisher interrupted", "publisher cleaned", "publisher socket closed", "discovery deleted"])
      expectInOrder(events, ["udp cleaned", "udp socket closed"])
      expect(events.at(-1)).toBe("main returned")
      expect(logs.at("Error").map((l) => l.annotations.fiber)).toEqual(["udp"]) // the orderly stop reports nothing
    }))

  it.effect("interrupting the main program tears the app down in order and reports nothing", () =>
    Effect.gen(function*() {
      const journal = yield* makeJournal
      const logs = makeLogCapture()
      const fiber = yield* superviseLayer(app()).pipe(
        Effect.provideService(Notes, journal),
        Effect.provide(logs.layer),
        Effect.forkChild
      )
      yield* TestClock.adjust("1 minute")
      yield* Fiber.interrupt(fiber)
      yield* journal.note("interrupt returned")

      const events = yield* journal.events
      expect(events.at(-1)).toBe("interrupt returned")
      expectInOrder(events, ["publisher interrupted", "publisher cleaned", "publisher socket closed", "discovery deleted"])
      expectInOrder(events, ["udp interrupted", "udp cleaned", "udp socket closed"])
      expect(logs.entries).toEqual([])
    }))

  it.effect("a fiber whose owning scope closes is stopped quietly and the supervisor keeps running", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const journal = yield* makeJournal
      const supervisor = yield* Supervisor
      const scope = yield* Scope.make()
      yield* supervisor.essential("session", loop(journal, "session")).pipe(Scope.provide(scope))
      yield* TestClock.adjust("3 seconds")
      yield* Scope.close(scope, Exit.void)
      expect(yield* journal.events).toEqual(["session interrupted", "session cleaned"])
      expect(logs.entries).toEqual([])
      // and the supervisor is still running: nothing abnormal happened
      const pending = yield* Effect.forkChild(Supervisor.await)
      yield* TestClock.adjust("1 minute")
      expect(pending.pollUnsafe()).toBeUndefined()
    }).pipe(Effect.provide([Supervisor.layer, logs.layer]))
  })
})

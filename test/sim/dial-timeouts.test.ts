/**
 * The receive watchdog's second wedge signal (reference §12: ≥ 4 dial timeouts in a row) comes from the transport:
 * `consecutiveDialTimeouts` counts dials that ended in `dial_timeout` and a dial that gets through resets it.
 * Real data planes on the simulated network under `TestClock`: the peer is unreachable behind a partition, then
 * reachable once it heals.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { expectCleanLifecycle } from "../support/lifecycle-oracle.ts"
import { makeLogCapture } from "../support/log-capture.ts"
import { makeSimNode, SimDirectory } from "./sim-node.ts"
import { makeSimWorld, simSeed } from "./simulated-socket.ts"

const HEALS_AT_MS = 120_000

const drive = (done: () => boolean, boundMs: number) =>
  Effect.gen(function*() {
    for (let elapsed = 0; elapsed < boundMs && !done(); elapsed += 50) yield* TestClock.adjust(50)
    return done()
  })

const scenario = (seed: number) =>
  Effect.gen(function*() {
    const world = yield* makeSimWorld({
      seed,
      conditions: { loss: 0, duplicate: 0, reorder: 0, delayMs: 10, jitterMs: 0, partitions: [{ from: 0, to: HEALS_AT_MS }] }
    })
    const directory = new SimDirectory()
    const a = yield* makeSimNode(world, directory, 1)
    const b = yield* makeSimNode(world, directory, 2)
    const timeouts = () => a.plane.transport.stats().consecutiveDialTimeouts

    for (const expected of [1, 2]) {
      const dial = yield* Effect.forkChild(a.plane.transport.dial(b.addr, 7))
      assert.isTrue(yield* drive(() => dial.pollUnsafe() !== undefined, 60_000), `dial ${expected} never ended [${world.describe()}]`)
      const exit = yield* Fiber.await(dial)
      assert.isTrue(Exit.isFailure(exit), `dial ${expected} got through a partition [${world.describe()}]`)
      assert.strictEqual(timeouts(), expected, `[${world.describe()}]`)
    }

    yield* drive(() => false, HEALS_AT_MS)
    const healed = yield* Effect.forkChild(a.plane.transport.dial(b.addr, 7))
    assert.isTrue(yield* drive(() => healed.pollUnsafe() !== undefined, 60_000), `the dial after the heal never ended [${world.describe()}]`)
    const conn = yield* Fiber.join(healed)
    assert.strictEqual(timeouts(), 0, `a dial that got through resets the count [${world.describe()}]`)
    yield* conn.abort
    for (const node of [a, b]) {
      const closing = yield* Effect.forkChild(node.shutdown)
      assert.isTrue(yield* drive(() => closing.pollUnsafe() !== undefined, 5_000))
    }
  })

describe("dial timeouts (simulated network, TestClock)", () => {
  it.live("dials into a partition are counted in a row; the first dial that gets through resets the count", () =>
    Effect.promise(() =>
      Effect.runPromise(
        expectCleanLifecycle(scenario(simSeed(7))).pipe(Effect.provide([TestClock.layer(), makeLogCapture().layer]), Effect.orDie)
      )
    ), 60_000)
})

/**
 * The simulation harness itself (test/sim/): real data planes on the seeded simulated network under `TestClock`
 * carry an echo transfer over a lossy, duplicating, reordering link, and one seed gives exactly one run — the
 * same packets, the same fates, the same simulated end time — which is what makes a printed seed a replay.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { expectCleanLifecycle } from "../support/lifecycle-oracle.ts"
import { makeLogCapture } from "../support/log-capture.ts"
import { makeSimNode, SimDirectory } from "./sim-node.ts"
import { makeSimWorld, simSeed } from "./simulated-socket.ts"

const BYTES = 200_000

/** One echo transfer; returns what the network saw and when the transfer ended (simulated ms). */
const echoRun = (seed: number) =>
  Effect.gen(function*() {
    const world = yield* makeSimWorld({
      seed,
      conditions: { loss: 0.05, duplicate: 0.02, reorder: 0.05, delayMs: 20, jitterMs: 10 }
    })
    const directory = new SimDirectory()
    const a = yield* makeSimNode(world, directory, 1)
    const b = yield* makeSimNode(world, directory, 2)
    const transfer = yield* Effect.forkChild(Effect.gen(function*() {
      const conn = yield* a.plane.transport.dial(b.addr, 7)
      const sent = new Uint8Array(BYTES).map((_, i) => (i * 31) & 0xff)
      const writer = yield* Effect.forkChild(Effect.andThen(conn.write(sent), conn.close))
      const received: Array<Uint8Array> = []
      let total = 0
      while (total < BYTES) {
        const chunk = yield* conn.read
        if (chunk === undefined) break
        received.push(chunk.slice())
        total += chunk.byteLength
      }
      yield* Fiber.join(writer)
      const joined = new Uint8Array(total)
      let offset = 0
      for (const chunk of received) {
        joined.set(chunk, offset)
        offset += chunk.byteLength
      }
      return { intact: total === BYTES && joined.every((byte, i) => byte === sent[i]) }
    }))
    let elapsed = 0
    while (transfer.pollUnsafe() === undefined && elapsed < 600_000) {
      yield* TestClock.adjust(10)
      elapsed += 10
    }
    const result = yield* Fiber.join(transfer)
    assert.isTrue(result.intact, `echoed bytes differ [${world.describe()}]`)
    // Shutdown waits on the clock too (the reset flush polls it): close in a fiber and keep time moving.
    const closing = yield* Effect.forkChild(Effect.andThen(a.shutdown, b.shutdown))
    for (let waited = 0; closing.pollUnsafe() === undefined; waited += 10) {
      assert.isBelow(waited, 5_000, `shutdown still running [${world.describe()}]`)
      yield* TestClock.adjust(10)
    }
    return { elapsed, stats: { ...world.network.stats }, describe: world.describe() }
  })

describe("simulation harness", () => {
  it.live("an echo transfer over a lossy simulated link arrives intact, and the same seed replays the same run", () =>
    Effect.gen(function*() {
      const seed = simSeed(20240601)
      // A fresh runtime per run: a TestClock of its own, started at 0 (nesting one under it.effect's does not work).
      const run = () =>
        Effect.promise(() =>
          Effect.runPromise(expectCleanLifecycle(echoRun(seed)).pipe(Effect.provide([TestClock.layer(), makeLogCapture().layer])))
        )
      const first = yield* run()
      const second = yield* run()
      assert.isAbove(first.stats.lost, 0, `the link lost nothing: not a test of recovery [${first.describe}]`)
      assert.deepStrictEqual(second, first, `seed ${seed} did not replay the same run`)
    }))
})

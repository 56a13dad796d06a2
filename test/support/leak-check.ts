/**
 * Leak checks for lifecycle tests (DESIGN.md §7): after a component's scope closes, (a) no fiber it started is still
 * alive and (b) no Node handle it opened (socket, server, timer, watcher, child process…) is still open.
 *
 *   it.live("the UDP shell stops cleanly", () =>
 *     expectNoLeaks(Effect.gen(function*() {
 *       const shell = yield* UdpShell.make(config)   // acquires into the scope expectNoLeaks provides
 *       yield* exerciseIt(shell)
 *     })))
 *
 * `expectNoLeaks(component)` runs `component` in a fresh scope, closes it, then checks both; it fails with
 * `LeakDetected` (naming the fiber count and each leaked resource type) or else passes the component's own exit
 * through, so a test can still assert on an expected failure. Works under `it.live` (real sockets) and `it.effect`.
 * For a layer, build it inside: `expectNoLeaks(Effect.flatMap(Layer.build(AppLayer), (ctx) => Effect.provide(use, ctx)))`.
 *
 * How (a) is measured: the fibers are counted by Effect's fiber runtime metrics (`child_fibers_active`), enabled only
 * for the component and written to a private MetricRegistry. Verified on effect 4.1 to count fibers forked with
 * forkScoped, forkChild, forkDetach, forkIn and FiberSet.run (they inherit the context that enables the metrics).
 * Not counted: fibers started with a context captured before the check (e.g. `Effect.runFork` from a raw callback);
 * their handles still show up in (b). The private registry means the component's own metrics are only visible from
 * inside `component`.
 *
 * How (b) is measured: `process.getActiveResourcesInfo()` counted by type before and after; only types whose count
 * grew are leaks, so vitest's own pipes and timers do not matter. A closed handle leaves the list a turn or two of
 * the event loop after its close callback, so the check polls (setImmediate turns, then short timer ticks) until
 * clean or until `settleMillis` of real time have passed; a clean component passes on the first clean poll.
 */
import { Data, Effect, Metric } from "effect"
import type { Scope } from "effect"

export interface LeakCheckOptions {
  /** Real time allowed for handles and fibers to finish closing before a leak is declared (default 1000 ms). */
  readonly settleMillis?: number
  /** Resource types not to check, for a component that legitimately leaves e.g. a shared global handle behind. */
  readonly ignoreResources?: ReadonlyArray<string>
}

export class LeakDetected extends Data.TaggedError("LeakDetected")<{
  /** Fibers started by the component and still alive. */
  readonly fibers: number
  /** Node resource types whose count grew, with how many more are open than before. */
  readonly resources: Readonly<Record<string, number>>
  readonly settleMillis: number
}> {
  override get message(): string {
    const parts: Array<string> = []
    if (this.fibers > 0) parts.push(`${this.fibers} fiber(s) still running`)
    const resources = Object.entries(this.resources).map(([type, extra]) => `${type} +${extra}`)
    if (resources.length > 0) parts.push(`Node resources still open: ${resources.join(", ")}`)
    return `leak after the component's scope closed (waited ${this.settleMillis} ms): ${parts.join("; ")}`
  }
}

/** Open Node handles by type (`process.getActiveResourcesInfo`). */
export const countResources = (): Map<string, number> => {
  const counts = new Map<string, number>()
  for (const type of process.getActiveResourcesInfo()) counts.set(type, (counts.get(type) ?? 0) + 1)
  return counts
}

/** Handle types with more open than in `before`, and by how many (`ignore`d types left out). */
export const grownResources = (
  before: ReadonlyMap<string, number>,
  ignore: ReadonlySet<string>
): Record<string, number> => {
  const grown: Record<string, number> = {}
  for (const [type, count] of countResources()) {
    const extra = count - (before.get(type) ?? 0)
    if (extra > 0 && !ignore.has(type)) grown[type] = extra
  }
  return grown
}

const FIBERS_ACTIVE = "child_fibers_active"

const activeFibers = Effect.map(Metric.snapshot, (metrics) => {
  const gauge = metrics.find((m) => m.id === FIBERS_ACTIVE && m.type === "Gauge")
  return gauge?.type === "Gauge" ? Number(gauge.state.value) : 0
})

const immediateTurn = Effect.callback<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

const timerTick = Effect.callback<void>((resume) => {
  const handle = setTimeout(() => resume(Effect.void), 5)
  return Effect.sync(() => clearTimeout(handle))
})

/**
 * Immediate turns first (close callbacks run in the same loop iteration); later 5 ms ticks, so that I/O such as a
 * peer's FIN can arrive. A tick is followed by an immediate turn: sampled straight from a timer callback, the timer
 * list still counts as an active "Timeout".
 */
const IMMEDIATE_TURNS = 20
const nextTurn = (turn: number): Effect.Effect<void> =>
  turn < IMMEDIATE_TURNS ? immediateTurn : Effect.andThen(timerTick, immediateTurn)

export const expectNoLeaks = <A, E, R>(
  component: Effect.Effect<A, E, R>,
  options?: LeakCheckOptions
): Effect.Effect<A, E | LeakDetected, Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    const settleMillis = options?.settleMillis ?? 1000
    const ignore = new Set(options?.ignoreResources)
    const before = countResources()
    const registry: Metric.MetricRegistry = new Map()
    const inRegistry = Effect.provideService(Metric.MetricRegistry, registry)

    const exit = yield* Effect.scoped(component).pipe(Metric.enableRuntimeMetrics, inRegistry, Effect.exit)

    const giveUpAt = performance.now() + settleMillis
    for (let turn = 0;; turn++) {
      const fibers = yield* inRegistry(activeFibers)
      const resources = grownResources(before, ignore)
      if (fibers === 0 && Object.keys(resources).length === 0) break
      if (performance.now() >= giveUpAt) return yield* new LeakDetected({ fibers, resources, settleMillis })
      yield* nextTurn(turn)
    }
    return yield* exit
  })

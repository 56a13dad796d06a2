/**
 * The receive watchdog: the pure decision (wedge, soft recoveries, guarded exit 86, suspend), its state file, and
 * the shell ticking on the TestClock until it asks for a restart.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Effect, Exit, Fiber, FileSystem } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import * as nodeFs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import {
  decideRxWatchdog,
  decodeWatchdogFile,
  DEFAULT_RX_WATCHDOG,
  encodeWatchdogFile,
  initialRxWatchdogState,
  loadWatchdogHistory,
  runRxWatchdog,
  type RxSample,
  type RxWatchdogAction,
  type RxWatchdogState,
  saveWatchdogHistory,
  WATCHDOG_FILE_NAME,
  WatchdogRestartRequested
} from "../../src/daemon/rx-watchdog.ts"
import { EssentialFiberFailed } from "../../src/lifecycle/supervisor.ts"
import { ExitCode, exitCodeOf } from "../../src/platform/exit-codes.ts"
import { localFileSystem } from "../../src/platform/file-system.ts"
import { makeLogCapture } from "../support/log-capture.ts"

const TICK = DEFAULT_RX_WATCHDOG.tickMs
const MIN = 60_000
const T0 = 1_800_000_000_000

/** A sample of a daemon up for an hour whose registry answered just now. */
const sample = (over: Partial<RxSample> & { readonly now: number }): RxSample => ({
  pktsRecv: 0,
  pktsSent: 0,
  consecutiveDialTimeouts: 0,
  uptimeMs: 60 * MIN,
  registryLastOkMs: over.now,
  ...over
})

interface Step {
  readonly now: number
  readonly sample: RxSample
  readonly before: RxWatchdogState
  readonly state: RxWatchdogState
  readonly actions: ReadonlyArray<RxWatchdogAction>
}

/** Runs ticks of `TICK` from `start` while the daemon sends `sentPerTick` and receives per `recvAt`. */
const run = (
  initial: RxWatchdogState,
  ticks: number,
  tickSample: (i: number, now: number) => RxSample,
  start = T0
): ReadonlyArray<Step> => {
  const steps: Array<Step> = []
  let state = initial
  for (let i = 0; i < ticks; i++) {
    const now = start + i * TICK
    const s = tickSample(i, now)
    const decision = decideRxWatchdog(state, s, now)
    steps.push({ now, sample: s, before: state, state: decision.state, actions: decision.actions })
    state = decision.state
  }
  return steps
}

const tags = (steps: ReadonlyArray<Step>) => steps.flatMap((s, i) => s.actions.map((a) => `${i}:${a._tag}${a._tag === "SoftRecovery" ? a.attempt : ""}`))

/** Received until tick `lastRecvTick`, then silent while sending 20 packets per tick. */
const wedgedAfter = (lastRecvTick: number, over: Partial<RxSample> = {}) => (i: number, now: number) =>
  sample({ now, pktsRecv: Math.min(i, lastRecvTick), pktsSent: 20 * i, ...over })

describe("rx watchdog decision", () => {
  it("a silent sender: wedge after 3 min, 3 soft recoveries 3 min apart, then exit 86 with the exit recorded", () => {
    const steps = run(initialRxWatchdogState(), 40, wedgedAfter(2))
    // Receive last progressed at tick 2; 3 min = 6 ticks later the wedge is seen and the first recovery runs.
    expect(tags(steps)).toEqual(["8:WedgeDetected", "8:SoftRecovery1", "14:SoftRecovery2", "20:SoftRecovery3", "26:RequestExit"])
    const exit = steps[26]!.actions[0]!
    assert.strictEqual(exit._tag, "RequestExit")
    if (exit._tag === "RequestExit") {
      expect(exit.exitCode).toBe(86)
      expect(exit.exitHistoryMs).toEqual([steps[26]!.now])
    }
    assert.isTrue(steps[39]!.state.exitRequested)
    expect(steps.slice(27).flatMap((s) => s.actions)).toEqual([])
  })

  it("no wedge while fewer than 30 packets are sent in the silent window, or nothing is sent", () => {
    const few = run(initialRxWatchdogState(), 60, (i, now) => sample({ now, pktsRecv: Math.min(i, 1), pktsSent: Math.floor(i / 2) }))
    expect(tags(few)).toEqual([])
    const idle = run(initialRxWatchdogState(), 60, (i, now) => sample({ now, pktsRecv: 1, pktsSent: 5 }))
    expect(tags(idle)).toEqual([])
  })

  it("receive progress ends the episode (Recovered) and restarts the count of soft recoveries", () => {
    const steps = run(initialRxWatchdogState(), 40, (i, now) =>
      sample({ now, pktsRecv: i < 2 ? i : i < 16 ? 2 : 3 + i, pktsSent: 20 * i }))
    expect(tags(steps).slice(0, 4)).toEqual(["8:WedgeDetected", "8:SoftRecovery1", "14:SoftRecovery2", "16:Recovered"])
    expect(steps[16]!.state.softRecoveries).toBe(0)
    expect(steps[39]!.state.softRecoveriesTotal).toBe(2)
  })

  it("four consecutive dial timeouts are a wedge even before 3 min of silence", () => {
    const steps = run(initialRxWatchdogState(), 4, (i, now) => sample({ now, pktsRecv: 1, pktsSent: i, consecutiveDialTimeouts: i === 3 ? 4 : i }))
    expect(tags(steps)).toEqual(["3:WedgeDetected", "3:SoftRecovery1"])
    const first = steps[3]!.actions[0]!
    expect(first._tag === "WedgeDetected" && first.reason).toBe("dial_timeouts")
  })

  it.each([
    ["uptime under 30 min", { uptimeMs: 29 * MIN }, ["uptime"]],
    ["registry silent for over 5 min", { registryLastOkMs: T0 }, ["registry_stale"]],
    ["registry never answered", { registryLastOkMs: undefined }, ["registry_stale"]]
  ] as const)("no exit when %s: suppressed, the daemon keeps running", (_name, over, guards) => {
    const steps = run(initialRxWatchdogState(), 40, wedgedAfter(2, over))
    expect(tags(steps)).toEqual(["8:WedgeDetected", "8:SoftRecovery1", "14:SoftRecovery2", "20:SoftRecovery3", "26:ExitSuppressed", "32:ExitSuppressed", "38:ExitSuppressed"])
    const suppressed = steps[26]!.actions[0]!
    expect(suppressed._tag === "ExitSuppressed" && suppressed.guards).toEqual(guards)
    assert.isFalse(steps[39]!.state.exitRequested)
  })

  it("no exit for a node that never received anything (isolated, not wedged)", () => {
    const steps = run(initialRxWatchdogState(), 40, (i, now) => sample({ now, pktsRecv: 0, pktsSent: 20 * i }))
    const suppressed = steps.flatMap((s) => s.actions).find((a) => a._tag === "ExitSuppressed")
    expect(suppressed).toEqual({ _tag: "ExitSuppressed", guards: ["never_received"] })
  })

  it("restart-loop breaker: 3 exits in the last 2 h forbid a 4th; older ones do not count", () => {
    const recent = [T0 - 100 * MIN, T0 - 60 * MIN, T0 - 10 * MIN]
    const blocked = run(initialRxWatchdogState(recent), 40, wedgedAfter(2))
    expect(blocked.flatMap((s) => s.actions).filter((a) => a._tag === "ExitSuppressed")).toContainEqual({ _tag: "ExitSuppressed", guards: ["restart_loop"] })
    assert.isFalse(blocked[39]!.state.exitRequested)

    const old = [T0 - 200 * MIN, T0 - 150 * MIN, T0 - 10 * MIN]
    const allowed = run(initialRxWatchdogState(old), 40, wedgedAfter(2))
    const exit = allowed[26]!.actions[0]!
    expect(exit._tag === "RequestExit" && exit.exitHistoryMs).toEqual([T0 - 10 * MIN, allowed[26]!.now])
  })

  it("a tick 4x late is a suspend: re-baseline and a fresh session, never a wedge", () => {
    let state = decideRxWatchdog(initialRxWatchdogState(), sample({ now: T0, pktsRecv: 5, pktsSent: 10 }), T0).state
    // Asleep for an hour with nothing received; many packets queued meanwhile.
    const woke = decideRxWatchdog(state, sample({ now: T0 + 60 * MIN, pktsRecv: 5, pktsSent: 500 }), T0 + 60 * MIN)
    expect(woke.actions.map((a) => a._tag)).toEqual(["SuspendDetected", "SoftRecovery"])
    expect(woke.state.suspendsTotal).toBe(1)
    expect(woke.state.baseline).toEqual({ recv: 5, sent: 500, atMs: T0 + 60 * MIN })
    state = woke.state
    // The next on-time tick sees no wedge: the silence started at the wake-up.
    const next = decideRxWatchdog(state, sample({ now: T0 + 60 * MIN + TICK, pktsRecv: 5, pktsSent: 520 }), T0 + 60 * MIN + TICK)
    expect(next.actions).toEqual([])
    // A wall clock stepped backwards is treated the same way.
    const back = decideRxWatchdog(next.state, sample({ now: T0, pktsRecv: 5, pktsSent: 520 }), T0)
    expect(back.actions[0]?._tag).toBe("SuspendDetected")
  })

  it("counters that go backwards (a rebuilt data plane) restart the window", () => {
    const steps = run(initialRxWatchdogState(), 9, (i, now) => sample({ now, pktsRecv: i < 3 ? 100 + i : 0, pktsSent: i < 3 ? 1000 : 20 * (i - 3) }))
    expect(tags(steps)).toEqual([])
    expect(steps[3]!.state.baseline).toEqual({ recv: 0, sent: 0, atMs: steps[3]!.now })
  })

  it("property: exits only when every guard holds, after exactly 3 soft recoveries; suspends never count", () => {
    // Phases of steady behaviour (a wedge needs minutes of the same thing), each maybe opened by a late tick.
    const phase = fc.record({
      ticks: fc.integer({ min: 1, max: 30 }),
      firstDt: fc.oneof({ weight: 6, arbitrary: fc.constant(TICK) }, { weight: 1, arbitrary: fc.integer({ min: TICK, max: 3 * TICK }) }, {
        weight: 2,
        arbitrary: fc.integer({ min: 4 * TICK, max: 40 * TICK })
      }),
      recv: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 5 }) }),
      sent: fc.integer({ min: 0, max: 40 }),
      dialTimeouts: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 8 }) }),
      registryAgeMs: fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: 4 * MIN }) }, { weight: 1, arbitrary: fc.integer({ min: 5 * MIN + 1, max: 60 * MIN }) }, {
        weight: 1,
        arbitrary: fc.constant(undefined)
      })
    })
    const tick = fc.array(phase, { minLength: 1, maxLength: 8 }).map((phases) =>
      phases.flatMap((p) => Array.from({ length: p.ticks }, (_, i) => ({ ...p, dt: i === 0 ? p.firstDt : TICK })))
    )
    const seen = { exits: 0, suppressed: 0, suspends: 0 }
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 120 * MIN }),
      fc.array(fc.integer({ min: 1, max: 240 * MIN }), { maxLength: 5 }),
      tick,
      (startUptime, historyAgo, ticks) => {
        let state = initialRxWatchdogState(historyAgo.map((ago) => T0 - ago).sort((a, b) => a - b))
        let now = T0
        let recv = 0
        let sent = 0
        let exits = 0
        let wedgeRecoveriesInEpisode = 0
        for (const t of ticks) {
          now += t.dt
          recv += t.recv
          sent += t.sent
          const s: RxSample = {
            pktsRecv: recv,
            pktsSent: sent,
            consecutiveDialTimeouts: t.dialTimeouts,
            uptimeMs: startUptime + (now - T0),
            registryLastOkMs: t.registryAgeMs === undefined ? undefined : now - t.registryAgeMs
          }
          const before = state
          const { actions, state: after } = decideRxWatchdog(before, s, now)
          const suspended = before.lastTickMs !== undefined && now - before.lastTickMs >= 4 * TICK
          if (after.softRecoveries === 0) wedgeRecoveriesInEpisode = 0
          for (const a of actions) {
            if (a._tag === "ExitSuppressed") seen.suppressed++
            if (a._tag === "SuspendDetected") seen.suspends++
            if (suspended) assert.notInclude(["WedgeDetected", "RequestExit", "ExitSuppressed"], a._tag, "a suspend is never a wedge")
            if (a._tag === "SoftRecovery" && a.reason === "wedge") {
              assert.isFalse(suspended)
              wedgeRecoveriesInEpisode++
            }
            if (a._tag === "SoftRecovery" && a.reason === "suspend") assert.isTrue(suspended)
            if (a._tag === "RequestExit") {
              exits++
              expect(a.exitCode).toBe(86)
              assert.isAtLeast(s.uptimeMs, 30 * MIN)
              assert.isDefined(s.registryLastOkMs)
              assert.isAtMost(now - s.registryLastOkMs!, 5 * MIN)
              assert.isTrue(before.everProgressed || before.suspendSeen)
              assert.isBelow(before.exitHistoryMs.filter((x) => now - x < 2 * 60 * MIN).length, 3)
              expect(before.softRecoveries).toBe(3)
              expect(wedgeRecoveriesInEpisode).toBe(3)
            }
          }
          assert.isAtMost(after.softRecoveries, 3)
          assert.isAtMost(wedgeRecoveriesInEpisode, 3)
          if (before.exitRequested) expect(actions).toEqual([])
          state = after
        }
        assert.isAtMost(exits, 1)
        seen.exits += exits
      }
    ), { numRuns: 500 })
    // The generator reaches every branch the property speaks about.
    expect([seen.exits > 0, seen.suppressed > 0, seen.suspends > 0]).toEqual([true, true, true])
  })
})

describe("rx watchdog state file", () => {
  it("round-trips, keeps the newest 16, and reports what is wrong with a bad file", () => {
    expect(decodeWatchdogFile(encodeWatchdogFile([3, 1, 2]))).toEqual({ exits: [1, 2, 3] })
    expect(decodeWatchdogFile(encodeWatchdogFile(Array.from({ length: 20 }, (_, i) => i)))).toEqual({ exits: Array.from({ length: 16 }, (_, i) => i + 4) })
    for (const bad of ["", "{", "[]", "null", "{\"version\":2,\"exits\":[]}", "{\"version\":1,\"exits\":[\"x\"]}", "{\"version\":1,\"exits\":[-1]}"]) {
      assert.property(decodeWatchdogFile(bad), "error", bad)
    }
  })

  it.effect("missing → empty; corrupt → empty with one Warning; saved atomically with no temp file left", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => nodeFs.mkdtempSync(nodePath.join(os.tmpdir(), "pf-wd-"))),
        (d) => Effect.sync(() => nodeFs.rmSync(d, { recursive: true, force: true }))
      )
      const file = nodePath.join(dir, WATCHDOG_FILE_NAME)
      expect(yield* loadWatchdogHistory(file)).toEqual([])
      nodeFs.writeFileSync(file, "{not json")
      expect(yield* loadWatchdogHistory(file)).toEqual([])
      expect(logs.at("Warn").map((l) => l.message)).toEqual(["rx watchdog state file unreadable; treating the exit history as empty"])
      yield* saveWatchdogHistory(file, [T0, T0 + 1])
      expect(yield* loadWatchdogHistory(file)).toEqual([T0, T0 + 1])
      expect(nodeFs.readdirSync(dir)).toEqual([WATCHDOG_FILE_NAME])
      expect(nodeFs.statSync(file).mode & 0o777).toBe(0o600)
    }).pipe(Effect.scoped, Effect.provide(localFileSystem), Effect.provide(logs.layer))
  })
})

/** One turn of the real event loop, so real file I/O can progress while the TestClock stands still. */
const ioTurn = Effect.callback<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

describe("rx watchdog shell", () => {
  it.effect("ticks on the clock, runs the soft recoveries, persists the exit and fails with exit code 86", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "pf-wd-" })
      const file = nodePath.join(dir, WATCHDOG_FILE_NAME)
      // One exit long ago: outside the 2 h window, so it neither blocks this exit nor survives in the file.
      yield* saveWatchdogHistory(file, [0])
      yield* TestClock.setTime(10 * 60 * MIN)
      let ticks = 0
      let lastSampleMs = 0
      let recoveries = 0
      const states: Array<RxWatchdogState> = []
      const fiber = yield* Effect.forkChild(runRxWatchdog({
        dataDirectory: dir,
        sample: Effect.map(Clock.currentTimeMillis, (now) => {
          ticks++
          lastSampleMs = now
          // Receives for the first 3 ticks, then only sends.
          return { pktsRecv: Math.min(ticks, 3), pktsSent: 20 * ticks, consecutiveDialTimeouts: 0, uptimeMs: 60 * MIN, registryLastOkMs: now }
        }),
        softRecover: Effect.sync(() => void recoveries++),
        onState: (s) => void states.push(s)
      }))
      while (fiber.pollUnsafe() === undefined) {
        yield* TestClock.adjust(TICK)
        yield* ioTurn
      }
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      assert.instanceOf(error, WatchdogRestartRequested)
      expect(exitCodeOf(exit)).toBe(ExitCode.watchdogRestart)
      expect(recoveries).toBe(3)
      expect(states.at(-1)?.softRecoveriesTotal).toBe(3)
      const saved = decodeWatchdogFile(yield* fs.readFileString(file))
      expect(saved).toEqual({ exits: [lastSampleMs] })
      // Received until tick 3, wedged 6 ticks later, then 3 recoveries 6 ticks apart and the exit 6 ticks after.
      expect(ticks).toBe(3 + 6 + 18)
      expect(nodeFs.readdirSync(dir)).toEqual([WATCHDOG_FILE_NAME])
      expect(logs.at("Error").map((l) => l.message)).toEqual(["rx watchdog: still wedged after soft recoveries; exiting for a supervised restart"])
    }).pipe(Effect.scoped, Effect.provide(localFileSystem), Effect.provide(logs.layer))
  })
})

describe("exit code 86", () => {
  it("the watchdog's error maps to 86, directly or through the supervisor", () => {
    expect(ExitCode.watchdogRestart).toBe(86)
    const error = new WatchdogRestartRequested({ detail: "x" })
    expect(exitCodeOf(Exit.fail(error))).toBe(86)
    const supervised = new EssentialFiberFailed({ fiber: "rx-watchdog", reason: "failed", cause: Cause.fail(error) })
    expect(exitCodeOf(Exit.fail(supervised))).toBe(86)
    const other = new EssentialFiberFailed({ fiber: "udp", reason: "died", cause: Cause.die(new Error("bug")) })
    expect(exitCodeOf(Exit.fail(other))).toBe(ExitCode.essentialFailed)
  })
})

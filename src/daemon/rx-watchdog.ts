/**
 * The receive watchdog (reference §12, §14 item 7): a daemon that keeps sending but stops receiving for minutes
 * is wedged (a dead NAT mapping, a stale registry endpoint, a socket the kernel stopped feeding), and a
 * long-running one once sent 43.5 MB while receiving 102 KB over nearly three days without noticing.
 *
 * Pure core (`decideRxWatchdog`), ticked every 30 s by the shell with a sample of the tunnel's counters:
 * - Wedge: no `pkts_recv` progress for 3 min while ≥ 30 packets were sent in that time, or ≥ 4 consecutive dial
 *   timeouts.
 * - On a wedge: up to 3 soft recoveries (the shell re-registers and, once a beacon exists, re-discovers), each
 *   followed by a fresh 3-minute window; then a request to exit with `ExitCode.watchdogRestart` (86) so the
 *   supervisor restarts us — but only when every guard holds: uptime ≥ 30 min, the registry answered within the
 *   last 5 min (a registry outage is not ours to fix by restarting), receive ever progressed or a suspend was
 *   seen (a node that never received anything is isolated, not wedged), and fewer than 3 watchdog exits in the
 *   last 2 h (a restart loop breaker; the history persists across restarts in `<data dir>/watchdog.json`).
 *   When a guard fails the exit is suppressed (reported, at most once per window) and the daemon keeps running.
 * - A tick ≥ 4× late means the host was suspended (or the wall clock stepped): re-baseline and ask for a soft
 *   recovery (fresh registry session), never count it as a wedge.
 *
 * Time is the wall clock (epoch ms): Linux's monotonic clock stops during suspend, so only the wall clock shows
 * one, and the exit history must survive restarts. Any receive progress resets the episode.
 *
 * The shell (`runRxWatchdog`) owns the clock, the state file and the actions; the daemon forks it as an
 * essential fiber (or races it with its supervisor) and exits 86 when it fails with `WatchdogRestartRequested`.
 */
import { Clock, Duration, Effect, FileSystem, Path, Runtime, Schema } from "effect"
import { writeFileAtomic } from "../lifecycle/atomic-file.ts"
import { ExitCode } from "../platform/exit-codes.ts"

export interface RxWatchdogConfig {
  readonly tickMs: number
  /** No receive progress for this long (with enough sent) is a wedge; also the pause after each soft recovery. */
  readonly wedgeAfterMs: number
  readonly minSentWhileSilent: number
  readonly dialTimeoutStreak: number
  readonly maxSoftRecoveries: number
  readonly minUptimeMs: number
  readonly registryOkWithinMs: number
  readonly exitWindowMs: number
  readonly maxExitsInWindow: number
  /** A tick this many times later than `tickMs` is a suspend. */
  readonly suspendFactor: number
}

export const DEFAULT_RX_WATCHDOG: RxWatchdogConfig = {
  tickMs: 30_000,
  wedgeAfterMs: 3 * 60_000,
  minSentWhileSilent: 30,
  dialTimeoutStreak: 4,
  maxSoftRecoveries: 3,
  minUptimeMs: 30 * 60_000,
  registryOkWithinMs: 5 * 60_000,
  exitWindowMs: 2 * 3600_000,
  maxExitsInWindow: 3,
  suspendFactor: 4
}

/** What the shell reads from the daemon on each tick. */
export interface RxSample {
  /** Packets the tunnel delivered (`TunnelStats.pkts_recv`). */
  readonly pktsRecv: number
  readonly pktsSent: number
  /** Dials that timed out in a row (0 when the daemon does not count them). */
  readonly consecutiveDialTimeouts: number
  readonly uptimeMs: number
  /** Wall-clock ms of the registry's last answer (`RegistrySessionState.lastOkMillis`). */
  readonly registryLastOkMs: number | undefined
}

export interface RxWatchdogState {
  readonly lastTickMs: number | undefined
  /** Counters when receive last progressed (or the window was last restarted). */
  readonly baseline: { readonly recv: number; readonly sent: number; readonly atMs: number } | undefined
  readonly everProgressed: boolean
  readonly suspendSeen: boolean
  /** Soft recoveries in the current wedge episode. */
  readonly softRecoveries: number
  /** When the last soft recovery or suppressed exit was acted on (paces the next one). */
  readonly lastActionMs: number | undefined
  readonly wedgedSinceMs: number | undefined
  readonly exitRequested: boolean
  /** Wall-clock ms of watchdog exits within the window, oldest first (persisted). */
  readonly exitHistoryMs: ReadonlyArray<number>
  readonly softRecoveriesTotal: number
  readonly suspendsTotal: number
}

export type ExitGuard = "uptime" | "registry_stale" | "never_received" | "restart_loop"

export type RxWatchdogAction =
  | { readonly _tag: "WedgeDetected"; readonly reason: "silent" | "dial_timeouts"; readonly silentMs: number; readonly sent: number }
  | { readonly _tag: "SoftRecovery"; readonly attempt: number; readonly reason: "wedge" | "suspend" }
  | { readonly _tag: "Recovered"; readonly afterMs: number }
  | { readonly _tag: "SuspendDetected"; readonly lateMs: number }
  | { readonly _tag: "ExitSuppressed"; readonly guards: ReadonlyArray<ExitGuard> }
  /** Persist `exitHistoryMs`, then exit with `exitCode`. */
  | { readonly _tag: "RequestExit"; readonly exitCode: number; readonly exitHistoryMs: ReadonlyArray<number> }

export const initialRxWatchdogState = (exitHistoryMs: ReadonlyArray<number> = []): RxWatchdogState => ({
  lastTickMs: undefined,
  baseline: undefined,
  everProgressed: false,
  suspendSeen: false,
  softRecoveries: 0,
  lastActionMs: undefined,
  wedgedSinceMs: undefined,
  exitRequested: false,
  exitHistoryMs,
  softRecoveriesTotal: 0,
  suspendsTotal: 0
})

/** The guards that forbid an exit now (empty: an exit is allowed). */
export const exitGuards = (
  state: RxWatchdogState,
  sample: RxSample,
  nowMs: number,
  config: RxWatchdogConfig = DEFAULT_RX_WATCHDOG
): ReadonlyArray<ExitGuard> => {
  const guards: Array<ExitGuard> = []
  if (!(sample.uptimeMs >= config.minUptimeMs)) guards.push("uptime")
  if (sample.registryLastOkMs === undefined || !(nowMs - sample.registryLastOkMs <= config.registryOkWithinMs)) guards.push("registry_stale")
  if (!state.everProgressed && !state.suspendSeen) guards.push("never_received")
  if (recentExits(state.exitHistoryMs, nowMs, config).length >= config.maxExitsInWindow) guards.push("restart_loop")
  return guards
}

const recentExits = (history: ReadonlyArray<number>, nowMs: number, config: RxWatchdogConfig) =>
  history.filter((t) => t <= nowMs && nowMs - t < config.exitWindowMs)

export interface RxWatchdogDecision {
  readonly state: RxWatchdogState
  readonly actions: ReadonlyArray<RxWatchdogAction>
}

/** One tick: the new state and what the shell must do. Pure. */
export const decideRxWatchdog = (
  previous: RxWatchdogState,
  sample: RxSample,
  nowMs: number,
  config: RxWatchdogConfig = DEFAULT_RX_WATCHDOG
): RxWatchdogDecision => {
  if (previous.exitRequested) return { state: previous, actions: [] }
  const actions: Array<RxWatchdogAction> = []
  const history = recentExits(previous.exitHistoryMs, nowMs, config)
  const fresh = { recv: sample.pktsRecv, sent: sample.pktsSent, atMs: nowMs }
  const base: RxWatchdogState = { ...previous, lastTickMs: nowMs, exitHistoryMs: history }

  // Suspend (or a wall clock that stepped, either way): the silence is not evidence; start over.
  const last = previous.lastTickMs
  if (last !== undefined && (nowMs - last >= config.suspendFactor * config.tickMs || nowMs < last)) {
    actions.push({ _tag: "SuspendDetected", lateMs: nowMs - last - config.tickMs })
    actions.push({ _tag: "SoftRecovery", attempt: 0, reason: "suspend" })
    return {
      state: {
        ...base,
        baseline: fresh,
        suspendSeen: true,
        softRecoveries: 0,
        lastActionMs: undefined,
        wedgedSinceMs: undefined,
        everProgressed: previous.everProgressed || (previous.baseline !== undefined && sample.pktsRecv > previous.baseline.recv),
        suspendsTotal: previous.suspendsTotal + 1
      },
      actions
    }
  }

  const baseline = previous.baseline
  // First sample, or counters that went backwards (a rebuilt data plane): start a window here.
  if (baseline === undefined || sample.pktsRecv < baseline.recv || sample.pktsSent < baseline.sent) {
    return { state: { ...base, baseline: fresh, softRecoveries: 0, lastActionMs: undefined, wedgedSinceMs: undefined }, actions }
  }
  if (sample.pktsRecv > baseline.recv) {
    if (previous.wedgedSinceMs !== undefined) actions.push({ _tag: "Recovered", afterMs: nowMs - previous.wedgedSinceMs })
    return {
      state: { ...base, baseline: fresh, everProgressed: true, softRecoveries: 0, lastActionMs: undefined, wedgedSinceMs: undefined },
      actions
    }
  }

  const silentMs = nowMs - baseline.atMs
  const sent = sample.pktsSent - baseline.sent
  const silent = silentMs >= config.wedgeAfterMs && sent >= config.minSentWhileSilent
  const dialing = sample.consecutiveDialTimeouts >= config.dialTimeoutStreak
  // Quiet again without progress: an episode with soft recoveries behind it stays open until receive progresses.
  if (!silent && !dialing) return { state: { ...base, wedgedSinceMs: previous.softRecoveries > 0 ? previous.wedgedSinceMs : undefined }, actions }

  let state: RxWatchdogState = base
  if (previous.wedgedSinceMs === undefined) {
    actions.push({ _tag: "WedgeDetected", reason: silent ? "silent" : "dial_timeouts", silentMs, sent })
    state = { ...state, wedgedSinceMs: nowMs }
  }
  // Each action is followed by a full window before the next one, so a recovery has time to show.
  if (previous.lastActionMs !== undefined && nowMs - previous.lastActionMs < config.wedgeAfterMs) return { state, actions }

  if (previous.softRecoveries < config.maxSoftRecoveries) {
    const attempt = previous.softRecoveries + 1
    actions.push({ _tag: "SoftRecovery", attempt, reason: "wedge" })
    return {
      state: {
        ...state,
        softRecoveries: attempt,
        softRecoveriesTotal: previous.softRecoveriesTotal + 1,
        lastActionMs: nowMs,
        baseline: { recv: baseline.recv, sent: sample.pktsSent, atMs: nowMs }
      },
      actions
    }
  }
  const guards = exitGuards(state, sample, nowMs, config)
  if (guards.length > 0) {
    actions.push({ _tag: "ExitSuppressed", guards })
    return { state: { ...state, lastActionMs: nowMs }, actions }
  }
  const exitHistoryMs = [...history, nowMs]
  actions.push({ _tag: "RequestExit", exitCode: ExitCode.watchdogRestart, exitHistoryMs })
  return { state: { ...state, exitRequested: true, exitHistoryMs, lastActionMs: nowMs }, actions }
}

// ---------------------------------------------------------------------------------------------------------------
// The state file: `<data dir>/watchdog.json` = {"version":1,"exits":[<epoch ms>, …]} (oldest first, ≤ 16 kept).

export const WATCHDOG_FILE_NAME = "watchdog.json"
const MAX_KEPT_EXITS = 16

export const encodeWatchdogFile = (exitHistoryMs: ReadonlyArray<number>): string =>
  `${JSON.stringify({ version: 1, exits: exitHistoryMs.slice(-MAX_KEPT_EXITS) })}\n`

/** The exit history in `text`, or a reason why it cannot be read. */
export const decodeWatchdogFile = (text: string): { readonly exits: ReadonlyArray<number> } | { readonly error: string } => {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (e) {
    return { error: `not JSON: ${e instanceof Error ? e.message : String(e)}` }
  }
  if (typeof parsed !== "object" || parsed === null) return { error: "not an object" }
  const { version, exits } = parsed as { readonly version?: unknown; readonly exits?: unknown }
  if (version !== 1) return { error: `unknown version ${JSON.stringify(version)}` }
  if (!Array.isArray(exits) || !exits.every((t): t is number => typeof t === "number" && Number.isFinite(t) && t >= 0)) {
    return { error: "exits is not a list of timestamps" }
  }
  return { exits: [...exits].sort((a, b) => a - b).slice(-MAX_KEPT_EXITS) }
}

/** Reads the exit history; a missing file is empty, an unreadable or corrupt one is empty with one Warning. */
export const loadWatchdogHistory = (file: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const exists = yield* fs.exists(file).pipe(Effect.orElseSucceed(() => false))
    if (!exists) return [] as ReadonlyArray<number>
    const text = yield* fs.readFileString(file).pipe(Effect.result)
    const decoded = text._tag === "Failure" ? { error: text.failure.message } : decodeWatchdogFile(text.success)
    if ("error" in decoded) {
      yield* Effect.logWarning("rx watchdog state file unreadable; treating the exit history as empty").pipe(
        Effect.annotateLogs({ file, detail: decoded.error })
      )
      return [] as ReadonlyArray<number>
    }
    return decoded.exits
  })

export const saveWatchdogHistory = (file: string, exitHistoryMs: ReadonlyArray<number>) =>
  writeFileAtomic(file, encodeWatchdogFile(exitHistoryMs))

// ---------------------------------------------------------------------------------------------------------------
// The shell.

/** The watchdog asks the supervisor for a restart: the process exits with `ExitCode.watchdogRestart` (86). */
export class WatchdogRestartRequested extends Schema.TaggedError<WatchdogRestartRequested>()("WatchdogRestartRequested", {
  detail: Schema.String
}) {
  override readonly [Runtime.errorExitCode] = ExitCode.watchdogRestart
  get code(): string {
    return "watchdog_restart"
  }
  override get message(): string {
    return `receive watchdog requested a restart: ${this.detail}`
  }
}

export interface RxWatchdogOptions<E> {
  /** `<data dir>` — the state file is `<data dir>/watchdog.json`. */
  readonly dataDirectory: string
  /** Reads the daemon's counters; called once per tick. `undefined` while there is nothing to watch (no data plane). */
  readonly sample: Effect.Effect<RxSample | undefined>
  /** The soft recovery: re-register (and re-discover through the beacon once there is one). Bounded by the shell. */
  readonly softRecover: Effect.Effect<void, E>
  readonly config?: Partial<RxWatchdogConfig>
  /** Called with every new state (for `/metrics`). */
  readonly onState?: (state: RxWatchdogState) => void
}

/**
 * Ticks the watchdog until it requests an exit (then fails with `WatchdogRestartRequested`, after persisting the
 * exit history). Never fails otherwise: a failed soft recovery or state-file write is logged and the loop goes on.
 */
export const runRxWatchdog = <E>(options: RxWatchdogOptions<E>): Effect.Effect<never, WatchdogRestartRequested, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const config: RxWatchdogConfig = { ...DEFAULT_RX_WATCHDOG, ...options.config }
    const path = yield* Path.Path
    const file = path.join(options.dataDirectory, WATCHDOG_FILE_NAME)
    let state = initialRxWatchdogState(yield* loadWatchdogHistory(file))
    options.onState?.(state)
    const recover = (attempt: number, reason: string) =>
      options.softRecover.pipe(
        Effect.timeoutOrElse({ duration: Duration.millis(config.wedgeAfterMs), orElse: () => Effect.fail("timed out" as const) }),
        Effect.matchCauseEffect({
          onSuccess: () => Effect.logInfo("rx watchdog soft recovery done").pipe(Effect.annotateLogs({ attempt, reason })),
          onFailure: (cause) => Effect.logWarning("rx watchdog soft recovery failed", cause).pipe(Effect.annotateLogs({ attempt, reason }))
        })
      )
    while (true) {
      yield* Effect.sleep(Duration.millis(config.tickMs))
      const sample = yield* options.sample
      if (sample === undefined) continue
      const nowMs = yield* Clock.currentTimeMillis
      const decision = decideRxWatchdog(state, sample, nowMs, config)
      state = decision.state
      options.onState?.(state)
      for (const action of decision.actions) {
        switch (action._tag) {
          case "WedgeDetected":
            yield* Effect.logWarning("rx watchdog: receive wedged").pipe(
              Effect.annotateLogs({ reason: action.reason, silent_s: Math.round(action.silentMs / 1000), sent: action.sent })
            )
            break
          case "SuspendDetected":
            yield* Effect.logInfo("rx watchdog: host suspend detected, re-baselining").pipe(
              Effect.annotateLogs({ late_s: Math.round(action.lateMs / 1000) })
            )
            break
          case "Recovered":
            yield* Effect.logInfo("rx watchdog: receive recovered").pipe(Effect.annotateLogs({ after_s: Math.round(action.afterMs / 1000) }))
            break
          case "SoftRecovery":
            yield* Effect.logWarning("rx watchdog: soft recovery").pipe(Effect.annotateLogs({ attempt: action.attempt, reason: action.reason }))
            yield* recover(action.attempt, action.reason)
            break
          case "ExitSuppressed":
            yield* Effect.logWarning("rx watchdog: still wedged, restart suppressed").pipe(Effect.annotateLogs({ guards: action.guards.join(",") }))
            break
          case "RequestExit": {
            yield* saveWatchdogHistory(file, action.exitHistoryMs).pipe(
              Effect.catch((e) => Effect.logWarning("rx watchdog: could not save its state file", e.message))
            )
            yield* Effect.logError("rx watchdog: still wedged after soft recoveries; exiting for a supervised restart").pipe(
              Effect.annotateLogs({ exit_code: action.exitCode, recent_exits: action.exitHistoryMs.length })
            )
            return yield* new WatchdogRestartRequested({ detail: `no receive progress after ${config.maxSoftRecoveries} soft recoveries` })
          }
        }
      }
    }
  })

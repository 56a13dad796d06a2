/**
 * The lifecycle oracle (DESIGN.md §4, §7): one verdict on a component's end state after it stopped, the same for
 * every test that starts something.
 *
 *   it.live("the daemon stops cleanly", () =>
 *     expectCleanLifecycle(runSomething, (started) => ({
 *       socketFiles: [started.socketPath],
 *       registry: { isListed: registryListing(client), nodeIds: [started.nodeId], recheckAfter: "300 millis" },
 *       stateFiles: [{ path: trustPath }]
 *     })))
 *
 * What it checks, and how:
 * - no fiber left running and no Node handle left open: `expectNoLeaks` (test/support/leak-check.ts — the
 *   fiber runtime metrics of the component, and `process.getActiveResourcesInfo` counted before and after);
 * - every given socket file is gone;
 * - the given registry holds no live entry for any given node ID, and, with `recheckAfter`, still none after that
 *   much more real time (nothing in flight — a late heartbeat or re-registration — re-created one);
 * - every given state file exists and parses completely (the default parser is `JSON.parse`; pass the
 *   project's own decoder, e.g. `decodeTrustFile`, to also check the schema), and, with `equals`, holds exactly
 *   the expected value (e.g. trust.json equals the last in-memory state).
 *
 * `expectCleanLifecycle(component, expectations)` runs the component in a fresh scope, closes it, then checks all
 * of the above; `checkEndState(expectations)` checks the parts that need no baseline (files, registry) after
 * something stopped by other means, e.g. a child process that exited. Each fails with `LifecycleViolation`, whose
 * message lists every violated invariant at once.
 *
 * `fileBaseline()` / `expectHandlesBack(baseline)` are the file-level form used by test/support/oracle-setup.ts:
 * after ALL the tests of a file, the process must hold no more Node handles than before the first one. Fibers
 * cannot be counted there — Effect's fiber metrics are per-context, enabled per component, with no global switch
 * in effect 4.1 — but a leaked fiber that waits on a timer, a socket or a child process still shows as a handle.
 */
import { Data, Duration, Effect } from "effect"
import type { Scope } from "effect"
import * as fs from "node:fs"
import { countResources, expectNoLeaks, grownResources, type LeakCheckOptions, type LeakDetected } from "./leak-check.ts"

export interface RegistryExpectation {
  /** Whether the registry holds a live entry for `nodeId` (see `registryListing`). */
  readonly isListed: (nodeId: number) => Effect.Effect<boolean, unknown>
  readonly nodeIds: ReadonlyArray<number>
  /** Check again after this much real time: nothing in flight may re-create an entry. */
  readonly recheckAfter?: Duration.Input
}

export interface StateFileExpectation {
  readonly path: string
  /** Throws (or returns a failure) on incomplete or invalid content. Default: `JSON.parse`. */
  readonly parse?: (text: string) => unknown
  /** When given, the parsed content must deep-equal this (e.g. the component's last in-memory state). */
  readonly equals?: unknown
}

export interface LifecycleExpectations {
  readonly socketFiles?: ReadonlyArray<string>
  readonly registry?: RegistryExpectation
  readonly stateFiles?: ReadonlyArray<StateFileExpectation>
}

export class LifecycleViolation extends Data.TaggedError("LifecycleViolation")<{
  readonly violations: ReadonlyArray<string>
}> {
  override get message(): string {
    return `lifecycle oracle: ${this.violations.join("; ")}`
  }
}

/** `isListed` for a registry client (src/registry/client.ts): a `lookup` answered `node_not_found` means gone. */
export const registryListing = (client: {
  readonly call: (request: Record<string, unknown>) => Effect.Effect<unknown, { readonly _tag: string; readonly code?: string }>
}) =>
(nodeId: number): Effect.Effect<boolean, unknown> =>
  client.call({ type: "lookup", node_id: nodeId }).pipe(
    Effect.as(true),
    Effect.catch((e) => e._tag === "RegistryRejected" && e.code === "node_not_found" ? Effect.succeed(false) : Effect.fail(e))
  )

/** Deep equality on JSON-like values (plain objects, arrays, primitives), key order ignored. */
const jsonEqual = (a: unknown, b: unknown): boolean => {
  if (a === b) return true
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (ka.length !== kb.length) return false
  return ka.every((k) => jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}

const unwrapParsed = (value: unknown): unknown => {
  // Accept an Effect `Result` from a project decoder: a Failure is a parse error, a Success its value.
  if (typeof value === "object" && value !== null && "_tag" in value) {
    const tagged = value as { readonly _tag: unknown; readonly failure?: unknown; readonly success?: unknown }
    if (tagged._tag === "Failure") throw new Error(String((tagged.failure as { message?: unknown })?.message ?? tagged.failure))
    if (tagged._tag === "Success") return tagged.success
  }
  return value
}

const stateFileViolations = (files: ReadonlyArray<StateFileExpectation>): Array<string> => {
  const violations: Array<string> = []
  for (const file of files) {
    let text: string
    try {
      text = fs.readFileSync(file.path, "utf8")
    } catch (error) {
      violations.push(`state file ${file.path} unreadable: ${(error as Error).message}`)
      continue
    }
    try {
      const parsed = unwrapParsed((file.parse ?? JSON.parse)(text))
      if (file.equals !== undefined && !jsonEqual(parsed, file.equals)) {
        violations.push(`state file ${file.path} differs from the expected state: ${JSON.stringify(parsed)} ≠ ${JSON.stringify(file.equals)}`)
      }
    } catch (error) {
      violations.push(`state file ${file.path} is incomplete or invalid: ${(error as Error).message}`)
    }
  }
  return violations
}

const listedNodes = (registry: RegistryExpectation) =>
  Effect.forEach(registry.nodeIds, (nodeId) =>
    registry.isListed(nodeId).pipe(
      Effect.map((listed) => listed ? [`node ${nodeId}`] : []),
      Effect.catch((error) => Effect.succeed([`node ${nodeId} (registry lookup failed: ${String(error)})`]))
    )).pipe(Effect.map((lists) => lists.flat()))

/** Checks files and registry (no baseline needed); fails with every violation found. */
export const checkEndState = (expectations: LifecycleExpectations): Effect.Effect<void, LifecycleViolation> =>
  Effect.gen(function*() {
    const violations: Array<string> = []
    for (const path of expectations.socketFiles ?? []) {
      if (fs.existsSync(path)) violations.push(`socket file ${path} still exists`)
    }
    violations.push(...stateFileViolations(expectations.stateFiles ?? []))
    const registry = expectations.registry
    if (registry !== undefined) {
      const listed = yield* listedNodes(registry)
      if (listed.length > 0) violations.push(`registry still lists ${listed.join(", ")} after shutdown`)
      else if (registry.recheckAfter !== undefined) {
        yield* Effect.sleep(registry.recheckAfter)
        const again = yield* listedNodes(registry)
        if (again.length > 0) {
          violations.push(`registry lists ${again.join(", ")} again ${Duration.format(Duration.fromInputUnsafe(registry.recheckAfter))} after shutdown (re-created)`)
        }
      }
    }
    if (violations.length > 0) return yield* new LifecycleViolation({ violations })
  })

/**
 * Runs `component` in a fresh scope, closes it, and checks the whole end state: no fiber or handle left
 * (`expectNoLeaks`), then `expectations` (given directly, or computed from the component's result). The
 * component's own exit is passed through when everything holds.
 */
export const expectCleanLifecycle = <A, E, R>(
  component: Effect.Effect<A, E, R>,
  expectations: LifecycleExpectations | ((result: A) => LifecycleExpectations) = {},
  options?: LeakCheckOptions
) =>
  Effect.gen(function*() {
    let result: { readonly value: A } | undefined
    const exit = yield* expectNoLeaks(Effect.tap(component, (value) => Effect.sync(() => (result = { value }))), options).pipe(Effect.exit)
    const wanted = typeof expectations === "function" ? (result === undefined ? {} : expectations(result.value)) : expectations
    yield* checkEndState(wanted)
    return yield* exit
  }) as Effect.Effect<A, E | LifecycleViolation | LeakDetected, Exclude<R, Scope.Scope>>

// ---------------------------------------------------------------------------------------------------------
// File level: Node handles before the first test and after the last one.

export type HandleBaseline = ReadonlyMap<string, number>

export const fileBaseline = (): HandleBaseline => countResources()

const turn = (delayMillis: number) =>
  Effect.callback<void>((resume) => {
    // A timer tick then an immediate turn: sampled from a timer callback, the timer list still counts.
    const timer = setTimeout(() => {
      immediate = setImmediate(() => resume(Effect.void))
    }, delayMillis)
    let immediate: NodeJS.Immediate | undefined
    return Effect.sync(() => {
      clearTimeout(timer)
      if (immediate !== undefined) clearImmediate(immediate)
    })
  })

/**
 * Fails with `LifecycleViolation` if more Node handles of some type are open than at `baseline`, after letting
 * closes settle for up to `settleMillis` of real time (a clean process passes on the first poll).
 */
export const expectHandlesBack = (
  baseline: HandleBaseline,
  options: { readonly settleMillis?: number; readonly ignoreResources?: ReadonlyArray<string>; readonly label?: string } = {}
): Effect.Effect<void, LifecycleViolation> =>
  Effect.gen(function*() {
    const ignore = new Set(options.ignoreResources)
    const giveUpAt = performance.now() + (options.settleMillis ?? 2000)
    for (let poll = 0;; poll++) {
      const extra = grownResources(baseline, ignore)
      if (Object.keys(extra).length === 0) return
      if (performance.now() >= giveUpAt) {
        const list = Object.entries(extra).map(([type, n]) => `${type} +${n}`).join(", ")
        return yield* new LifecycleViolation({
          violations: [`${options.label ?? "after the last test"}: Node resources still open: ${list}`]
        })
      }
      yield* turn(poll < 10 ? 0 : 10)
    }
  })

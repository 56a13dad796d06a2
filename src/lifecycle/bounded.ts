/**
 * Bounded shutdown steps (DESIGN.md §4 rules 2 and 4): nothing can hang shutdown, and nothing one step does can
 * stop the next step from running.
 *
 * Contract of `boundedStep(step, deadline, effect)`:
 * - `effect` is given `deadline`; if it has not finished by then it is interrupted, a Warning names the step and its
 *   deadline, and the outcome is `TimedOut`.
 * - A failure or defect is contained: logged at Warning with its cause, outcome `Failed`. Shutdown goes on either way.
 * - A step that finishes in time logs nothing; outcome `Completed`.
 * - The outcome is returned and also handed to the `StepRecorder` in context (a no-op by default) so a shutdown
 *   report or a test can see every step, including those run as finalizers whose result nobody receives.
 * - It works inside finalizers, which run uninterruptibly: the timed effect is raced in an interruptible child
 *   (effect4-guide §3). It cannot cut uninterruptible work (regions the step marks so, or the step's own
 *   finalizers once it has been cut): the cut waits for them, so keep them short.
 * - An interruption of the caller (not of the step) is not contained: it propagates as usual.
 *
 * All log lines carry `step=<name>` and `deadline=<formatted duration>` annotations.
 */
import { Cause, Context, Duration, Effect, Exit, Option, Scope } from "effect"

interface StepOutcomeBase {
  readonly step: string
  readonly deadline: Duration.Duration
  readonly elapsed: Duration.Duration
}

export type StepOutcome =
  | StepOutcomeBase & { readonly _tag: "Completed" }
  | StepOutcomeBase & { readonly _tag: "TimedOut" }
  | StepOutcomeBase & { readonly _tag: "Failed"; readonly cause: Cause.Cause<unknown> }

/** Receives the outcome of every bounded step run in its context. */
export const StepRecorder = Context.Reference<(outcome: StepOutcome) => Effect.Effect<void>>(
  "pilotfish/lifecycle/StepRecorder",
  { defaultValue: () => () => Effect.void }
)

export const boundedStep = <A, E, R>(
  step: string,
  deadline: Duration.Input,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<StepOutcome, never, R> => {
  const limit = Duration.fromInputUnsafe(deadline)
  return Effect.gen(function*() {
    const [elapsed, exit] = yield* Effect.timed(Effect.exit(Effect.timeoutOption(effect, limit)))
    const base = { step, deadline: limit, elapsed }
    let outcome: StepOutcome
    if (Exit.isFailure(exit)) {
      outcome = { ...base, _tag: "Failed", cause: exit.cause }
      yield* Effect.logWarning(`shutdown step "${step}" failed; shutdown continues`, exit.cause)
    } else if (Option.isNone(exit.value)) {
      outcome = { ...base, _tag: "TimedOut" }
      yield* Effect.logWarning(
        `shutdown step "${step}" overran its deadline of ${Duration.format(limit)} and was cut; shutdown continues`
      )
    } else {
      outcome = { ...base, _tag: "Completed" }
    }
    const record = yield* StepRecorder
    yield* record(outcome)
    return outcome
  }).pipe(Effect.annotateLogs({ step, deadline: Duration.format(limit) }))
}

/** `Effect.addFinalizer` with `boundedStep`: the step runs when the current scope closes, whatever its exit. */
export const addBoundedFinalizer = <E, R>(
  step: string,
  deadline: Duration.Input,
  effect: Effect.Effect<unknown, E, R>
): Effect.Effect<void, never, R | Scope.Scope> => Effect.addFinalizer(() => boundedStep(step, deadline, effect))

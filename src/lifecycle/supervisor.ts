/**
 * Supervision of essential fibers (DESIGN.md §4 rule 5): the daemon lives exactly as long as all of its essential
 * fibers (data plane, IPC server, health server…) keep running.
 *
 * Contract:
 * - The first essential fiber to end abnormally ends the whole. It is logged once, at Error level, annotated with
 *   `fiber=<name>` and carrying its cause, and surfaces as an `EssentialFiberFailed` naming the fiber.
 * - Abnormal means: it failed (`reason: "failed"`), died of a defect (`"died"`), returned (`"exited"`: a server loop
 *   that returns has stopped serving, which a daemon must not survive silently), or was interrupted by anything other
 *   than the closing of the scope that owns it (`"interrupted"`, e.g. a loop whose queue was shut down under it).
 * - Once the owning scope is closing, interruption and normal completion are the orderly stop and are not reported;
 *   a real failure during the stop (a finalizer that fails) is still logged.
 * - Before `supervise` / `superviseLayer` fails or is interrupted, every other essential fiber has been interrupted
 *   and joined: its finalizers have completed.
 *
 * Two shapes:
 * - `supervise({ udp, ipc })` runs the fibers directly in a scope of its own.
 * - Layer-built apps: components register from inside their layers with `supervisor.essential(name, effect)`;
 *   the main program blocks on `Supervisor.await` (or uses `superviseLayer(appLayer)`). A fiber forked inside a
 *   layer is otherwise silent when it fails (effect4-guide §16.1).
 *
 * Why each essential fiber lives in the *registering* scope rather than in one set owned by the supervisor: the
 * Supervisor is a dependency of every component, so it is torn down last. Fibers kept in its scope would outlive
 * the sockets and queues their own component releases first, and would die of those closed resources in the middle
 * of an orderly shutdown. Forked into the component's scope after its resources, a fiber is interrupted (and joined)
 * before them, in the component's own teardown order.
 */
import { Cause, Context, Deferred, Effect, Exit, Layer, Runtime, Schema, Scope } from "effect"

/** How an essential fiber ended, when that ending takes the daemon down. */
export const EssentialFiberEnding = Schema.Literals([
  "failed", // ended with a typed error
  "died", // ended with a defect
  "exited", // returned: the loop stopped doing its job
  "interrupted" // interrupted by something other than its owner's orderly stop
])
export type EssentialFiberEnding = typeof EssentialFiberEnding.Type

export class EssentialFiberFailed extends Schema.TaggedError<EssentialFiberFailed>()("EssentialFiberFailed", {
  fiber: Schema.String,
  reason: EssentialFiberEnding,
  cause: Schema.Cause(Schema.Unknown, Schema.Defect())
}) {
  /** The supervisor already logged this failure with its full cause; runMain must not report it a second time. */
  override readonly [Runtime.errorReported] = false

  /** Machine-readable code, stable across releases: `essential_<reason>`. */
  get code(): string {
    return `essential_${this.reason}`
  }
  override get message(): string {
    return `essential fiber "${this.fiber}" ${describeEnding(this.reason, this.cause)}`
  }
}

const describeEnding = (reason: EssentialFiberEnding, cause: Cause.Cause<unknown>): string => {
  switch (reason) {
    case "exited":
      return "exited unexpectedly"
    case "interrupted":
      return "was interrupted unexpectedly"
    case "failed":
    case "died": {
      const error = Cause.squash(cause)
      const text = error instanceof Error ? error.message || error.name : String(error)
      return `${reason}: ${text}`
    }
  }
}

/**
 * Classifies how a fiber ended, or `undefined` when the ending is not abnormal: interruption or completion while
 * its owning scope is closing.
 */
const classifyEnding = (exit: Exit.Exit<unknown, unknown>, ownerClosing: boolean): EssentialFiberEnding | undefined => {
  if (Exit.isSuccess(exit)) return ownerClosing ? undefined : "exited"
  const cause = exit.cause
  if (Cause.hasFails(cause)) return "failed"
  if (Cause.hasDies(cause)) return "died"
  return ownerClosing ? undefined : "interrupted"
}

export interface SupervisorShape {
  /**
   * Forks `effect` as the essential fiber `name` into the caller's scope: it is interrupted and joined when that
   * scope closes, and its first abnormal ending ends `await`. Every log line it writes is annotated `fiber=<name>`.
   */
  readonly essential: <A, E, R>(name: string, effect: Effect.Effect<A, E, R>) => Effect.Effect<void, never, R | Scope.Scope>
  /** Never succeeds; fails with the first abnormal ending of any essential fiber. */
  readonly await: Effect.Effect<never, EssentialFiberFailed>
}

const makeSupervisor = (): SupervisorShape => {
  const firstFailure = Deferred.makeUnsafe<never, EssentialFiberFailed>()

  const report = (name: string, exit: Exit.Exit<unknown, unknown>, owner: Scope.Scope): Effect.Effect<void> => {
    const reason = classifyEnding(exit, owner.state._tag === "Closed")
    if (reason === undefined) return Effect.void
    const cause = Exit.isFailure(exit) ? exit.cause : Cause.empty
    const failure = new EssentialFiberFailed({ fiber: name, reason, cause })
    // Every abnormal ending is logged, even after the first one already decided the outcome.
    return Effect.logError(failure.message, cause).pipe(
      Effect.andThen(Deferred.fail(firstFailure, failure)),
      Effect.asVoid
    )
  }

  const essential = <A, E, R>(name: string, effect: Effect.Effect<A, E, R>) =>
    Effect.gen(function*() {
      const owner = yield* Scope.Scope
      yield* effect.pipe(
        Effect.onExit((exit) => report(name, exit, owner)),
        Effect.annotateLogs("fiber", name),
        Effect.forkIn(owner)
      )
    })

  return { essential, await: Deferred.await(firstFailure) }
}

/**
 * The supervisor of a layer-built app. Provide `Supervisor.layer` once, at the top (layers are memoized, so every
 * component that depends on it shares the one instance), and block the main program on `Supervisor.await`.
 */
export class Supervisor extends Context.Service<Supervisor, SupervisorShape>()("pilotfish/lifecycle/Supervisor") {
  static readonly layer: Layer.Layer<Supervisor> = Layer.sync(Supervisor, makeSupervisor)

  /** Fails with the first abnormal ending of any essential fiber registered with the provided Supervisor. */
  static readonly await: Effect.Effect<never, EssentialFiberFailed, Supervisor> = Supervisor.use((s) => s.await)
}

type ServicesOf<Fibers extends Record<string, Effect.Effect<unknown, unknown, unknown>>> = Exclude<
  Effect.Services<Fibers[keyof Fibers]>,
  Scope.Scope
>

/**
 * Runs the named essential fibers until the first of them ends abnormally; then interrupts and joins the others and
 * fails with that fiber's `EssentialFiberFailed`. Interrupting `supervise` interrupts and joins all of them.
 * A fiber that needs a `Scope` gets supervise's own, closed when supervise ends. With no fibers at all it waits
 * forever: there is nothing that could end it.
 */
export const supervise = <const Fibers extends Record<string, Effect.Effect<unknown, unknown, unknown>>>(
  fibers: Fibers
): Effect.Effect<never, EssentialFiberFailed, ServicesOf<Fibers>> => {
  // Object.entries forgets each fiber's requirements; restate them.
  const entries = Object.entries(fibers) as Array<[string, Effect.Effect<unknown, unknown, ServicesOf<Fibers> | Scope.Scope>]>
  return Effect.scoped(Effect.gen(function*() {
    const supervisor = makeSupervisor()
    for (const [name, effect] of entries) {
      yield* supervisor.essential(name, effect)
    }
    return yield* supervisor.await
  }))
}

/**
 * Builds `app` (whose components register essential fibers with the Supervisor) and runs until the first essential
 * fiber ends abnormally or the caller is interrupted; either way the app's layers are torn down, essential fibers
 * interrupted and joined first, before this returns.
 */
export const superviseLayer = <ROut, E, RIn>(
  app: Layer.Layer<ROut, E, RIn>
): Effect.Effect<never, E | EssentialFiberFailed, Exclude<RIn, Supervisor>> =>
  Supervisor.await.pipe(Effect.provide(Layer.provideMerge(app, Supervisor.layer)))

/**
 * A coalescing saver: persists some in-memory state from a background fiber, so that a mutation never waits
 * for the disk and nothing is held while the disk works (DESIGN.md §4 rule 7, reference §5 "PR (c)").
 *
 * Contract:
 * - `markDirty` is synchronous and never blocks: it bumps a version and wakes the saver. Bursts coalesce into
 *   one save (the wake-up signal holds at most one pending token, and an optional `debounce` lets a burst
 *   settle first).
 * - A save snapshots the state (`snapshot`, which must copy — it runs outside any lock), then writes it. A
 *   failed write is logged with its cause, counted, and retried on `retry`'s schedule; the state stays
 *   dirty, so it is never silently dropped.
 * - When the owning scope closes, the saver fiber is interrupted and joined — a write in flight is waited for,
 *   never abandoned, since its rename could otherwise land after the final save — then a final save runs only
 *   if something is unsaved (an untouched file is never rewritten); both together are bounded by
 *   `finalSaveTimeout`. A final save that fails or overruns is reported at Error level with its cause.
 */
import { Duration, Effect, Fiber, Queue, Schedule } from "effect"

export interface CoalescingSaverOptions<E, R> {
  /** Names the saver in logs, e.g. "trust store". */
  readonly name: string
  /** Copies the state to persist. Runs on the saver fiber, never under a caller's lock. */
  readonly snapshot: Effect.Effect<Uint8Array | string>
  /** Writes one snapshot (typically `writeFileAtomic`). */
  readonly write: (data: Uint8Array | string) => Effect.Effect<void, E, R>
  /** Wait after a wake-up before snapshotting, so a burst of mutations becomes one write. Default 0. */
  readonly debounce?: Duration.Input
  /** Delays between retries of a failed write. Default: exponential from 100 ms, capped at 5 s. */
  readonly retry?: Schedule.Schedule<unknown, unknown>
  /** Bound on the final save at shutdown. Default 5 s. */
  readonly finalSaveTimeout?: Duration.Input
}

export interface SaverStats {
  readonly saves: number
  readonly failures: number
  readonly unsaved: boolean
}

export interface CoalescingSaver {
  /** Records that the state changed; never blocks. */
  readonly markDirty: () => void
  /**
   * Saves now if anything is unsaved and waits for it, retrying failed writes; bound it with a timeout where
   * the disk may be failing for good.
   */
  readonly flush: Effect.Effect<void>
  readonly stats: Effect.Effect<SaverStats>
}

const defaultRetry = Schedule.exponential("100 millis").pipe(
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(5))))
)

export const makeCoalescingSaver = Effect.fnUntraced(function*<E, R>(options: CoalescingSaverOptions<E, R>) {
  const context = yield* Effect.context<R>()
  const wake = yield* Queue.dropping<void>(1)
  let version = 0
  let savedVersion = 0
  let saves = 0
  let failures = 0
  const log = Effect.annotateLogs({ saver: options.name })

  // One attempt: snapshot the current version, write it, and record it as saved if nothing newer is saved.
  const saveOnce = Effect.gen(function*() {
    const target = version
    if (target === savedVersion) return
    const data = yield* options.snapshot
    // Uninterruptible: the file operations underneath cannot be cancelled, so an interrupted write could still
    // rename its temp file into place later — after, and over, the final save. Shutdown waits for it instead.
    yield* options.write(data).pipe(
      Effect.provide(context),
      Effect.uninterruptible,
      Effect.tapCause((cause) =>
        Effect.sync(() => failures++).pipe(
          Effect.andThen(Effect.logWarning("save failed, will retry", cause)),
          log
        )
      )
    )
    saves++
    if (target > savedVersion) savedVersion = target
  })
  const saveUntilDone = saveOnce.pipe(Effect.retry(options.retry ?? defaultRetry))

  const loop = Effect.gen(function*() {
    while (true) {
      yield* Queue.take(wake)
      if (options.debounce !== undefined) yield* Effect.sleep(options.debounce)
      yield* saveUntilDone
    }
  })
  // Not `forkScoped`: the scope's own finalizer would wait for the fiber without a bound, and a write hung on
  // a dead disk never ends. The release below stops it and waits with a bound instead; one bound covers both
  // steps, waiting for a write in flight and the final save.
  yield* Effect.acquireRelease(Effect.forkDetach(loop), (fiber) =>
    Effect.gen(function*() {
      // Ask the saver to stop, then wait for it: a write in flight finishes first (see saveOnce). Awaiting
      // separately from the request keeps the wait itself cut by the timeout if the disk hangs.
      fiber.interruptUnsafe()
      yield* Fiber.await(fiber)
      if (version === savedVersion) return
      yield* saveOnce
      yield* Effect.logDebug("final save done")
    }).pipe(
      Effect.timeout(options.finalSaveTimeout ?? "5 seconds"),
      Effect.catchCause((cause) => Effect.logError("final save failed: the last changes are not on disk", cause)),
      log
    )
  )

  const saver: CoalescingSaver = {
    markDirty: () => {
      version++
      Queue.offerUnsafe(wake, undefined)
    },
    flush: Effect.suspend(() => saveUntilDone).pipe(Effect.orDie),
    stats: Effect.sync(() => ({ saves, failures, unsaved: version !== savedVersion }))
  }
  return saver
})

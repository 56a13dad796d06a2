/**
 * Crash-safe replacement of a file: temp file in the same directory → write → fsync → close → rename →
 * fsync the directory. A reader sees either the old file or the new one, never a torn mix, and a failed
 * write leaves the old file untouched and no temp file behind (DESIGN.md §5).
 */
import { Effect, FileSystem, Path } from "effect"
import type { PlatformError } from "effect/PlatformError"

export interface AtomicWriteOptions {
  /** Permission bits of the new file (default 0600: state files hold keys and trust). */
  readonly mode?: number
}

let tempCounter = 0

export const writeFileAtomic = Effect.fn("writeFileAtomic")(function*(
  target: string,
  data: Uint8Array | string,
  options?: AtomicWriteOptions
): Effect.fn.Return<void, PlatformError, FileSystem.FileSystem | Path.Path> {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data
  const dir = path.dirname(target)
  // pid + a process-wide counter: two concurrent writers of the same target never share a temp file
  // (the Go trust store once did, reference §14.9).
  const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${++tempCounter}.tmp`)
  const removeTmp = fs.remove(tmp, { force: true }).pipe(Effect.ignore)
  yield* Effect.scoped(Effect.gen(function*() {
    // "wx": create exclusively, so a symlink planted at the temp path is refused rather than followed.
    const file = yield* fs.open(tmp, { flag: "wx", mode: options?.mode ?? 0o600 })
    yield* file.writeAll(bytes)
    yield* file.sync
  })).pipe(Effect.onError(() => removeTmp))
  yield* fs.rename(tmp, target).pipe(Effect.onError(() => removeTmp))
  // Make the rename itself durable.
  yield* Effect.scoped(Effect.flatMap(fs.open(dir, { flag: "r" }), (d) => d.sync))
})

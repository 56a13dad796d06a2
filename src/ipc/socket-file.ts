/**
 * The IPC socket file, installed without a permission race (reference §9 "Newer hardening", §14.12).
 *
 * Binding straight at the target and chmod-ing afterwards leaves a window in which the socket exists with the
 * umask's permissions; tightening the umask is process-wide. Instead the listener binds inside a fresh staging
 * directory next to the target (mkdtemp creates it 0700, so nobody else can reach the socket in it), the socket
 * is chmod-ed 0600 there, and an atomic rename puts it in place, replacing a stale file left by a crashed daemon.
 * Same directory, so the rename never crosses file systems.
 *
 * When the scope closes the file is removed, but only if it is still ours (same inode): a newer daemon that has
 * since taken over the path keeps its socket. The removal is registered before the listener is created, so it
 * runs after the listener has closed (DESIGN.md §4 rule 4: close sockets → remove the IPC socket file).
 *
 * While it runs, `watch` checks the path: a socket file deleted (a tmp cleaner, an operator) or replaced by
 * someone else leaves a daemon nobody can reach although its listener is fine. That is an essential failure —
 * the supervisor (systemd, Kubernetes) restarts us and the file comes back — not something to limp on with.
 */
import { Data, type Duration, Effect, FileSystem, Option, Path, Scope } from "effect"
import type { PlatformError } from "effect/PlatformError"

/** Short on purpose: a Unix socket path is limited to ~107 bytes and the staging path is the target's dir + this. */
const STAGING_PREFIX = ".ipc-"
const STAGED_NAME = "s"

export class IpcSocketFileLost extends Data.TaggedError("IpcSocketFileLost")<{
  readonly path: string
  readonly detail: string
}> {
  get code(): string {
    return "ipc_socket_file_lost"
  }
  override get message(): string {
    return `the IPC socket file ${this.path} ${this.detail}: clients cannot reach this daemon (hint: keep the socket out of directories that tmp cleaners sweep; a restart recreates it)`
  }
}

export interface InstalledSocketFile<A> {
  readonly listening: A
  /** Fails once the file at the target is gone or no longer ours, checked every `interval`; never succeeds. */
  readonly watch: (interval: Duration.Input) => Effect.Effect<never, IpcSocketFileLost>
}

/**
 * Runs `listen(stagingPath)` (which must bind a Unix socket at `stagingPath` in the current scope), then moves
 * the socket to `target` with mode 0600. The file is removed when the scope closes — or, given `removeIn`, when
 * that scope closes: a daemon removes it last of all (DESIGN.md §4 rule 4), after its other sockets.
 */
export const installSocketFile = <A, E, R>(
  target: string,
  listen: (stagingPath: string) => Effect.Effect<A, E, R>,
  removeIn?: Scope.Scope
): Effect.Effect<InstalledSocketFile<A>, E | PlatformError, R | FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    let installedInode: bigint | undefined = undefined
    const removeIfOurs = Effect.gen(function*() {
      if (installedInode === undefined) return
      const current = yield* fs.stat(target)
      if (Option.getOrUndefined(current.ino) === installedInode) yield* fs.remove(target)
    }).pipe(Effect.ignore)
    if (removeIn !== undefined) yield* Scope.addFinalizer(removeIn, removeIfOurs)
    const staging = yield* Effect.acquireRelease(
      fs.makeTempDirectory({ directory: path.dirname(target), prefix: STAGING_PREFIX }),
      (dir) =>
        Effect.andThen(
          removeIn === undefined ? removeIfOurs : Effect.void,
          fs.remove(dir, { recursive: true, force: true }).pipe(Effect.ignore)
        )
    )
    const staged = path.join(staging, STAGED_NAME)
    const listening = yield* listen(staged)
    yield* fs.chmod(staged, 0o600)
    yield* fs.rename(staged, target)
    installedInode = Option.getOrUndefined((yield* fs.stat(target)).ino)
    // The staging directory is empty now; nothing should litter the socket's directory while the daemon runs.
    yield* fs.remove(staging, { recursive: true, force: true })
    const check = fs.stat(target).pipe(
      Effect.mapError(() => new IpcSocketFileLost({ path: target, detail: "was removed" })),
      Effect.flatMap((info) =>
        Option.getOrUndefined(info.ino) === installedInode
          ? Effect.void
          : Effect.fail(new IpcSocketFileLost({ path: target, detail: "was replaced by another file" }))
      )
    )
    const watch = (interval: Duration.Input): Effect.Effect<never, IpcSocketFileLost> =>
      Effect.forever(Effect.andThen(Effect.sleep(interval), check))
    return { listening, watch }
  })

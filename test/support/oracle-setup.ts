/**
 * The lifecycle oracle at the end of every test file (vitest `setupFiles`): the Node handles open after the
 * file's last test — sockets, servers, timers, child processes, watchers — must be no more, type by type, than
 * before its first one. A component that a test forgot to stop, or that stops without closing everything, fails
 * the file even when the test itself checked nothing.
 *
 * Why a file-level hook and not per test: a file may share one component between its tests (a registry in
 * `beforeAll`), so only the file's end is a point where everything must be closed. Per-component checks with
 * fibers, socket files, registry entries and state files are `expectCleanLifecycle` / `checkEndState`
 * (lifecycle-oracle.ts), called by the tests that start those components.
 *
 * Registered before the file's own hooks, so this `afterAll` runs after theirs (vitest runs "after" hooks in
 * reverse order). `PILOTFISH_SKIP_FILE_ORACLE=1` turns it off, e.g. to look at one failing test in isolation.
 */
import { Effect } from "effect"
import { afterAll, beforeAll } from "vitest"
import { expectHandlesBack, fileBaseline, type HandleBaseline } from "./lifecycle-oracle.ts"

if (process.env["PILOTFISH_SKIP_FILE_ORACLE"] !== "1") {
  let baseline: HandleBaseline | undefined
  beforeAll(() => {
    // Node opens the standard streams' pipes lazily, on first access (a logger writing to stdout, NodeServices'
    // stdio reading stdin): open them now, so that they are part of the baseline rather than a "leak" of the
    // first test that touches them.
    void process.stdin.readable
    void process.stdout.writable
    void process.stderr.writable
    baseline = fileBaseline()
  })
  afterAll(async () => {
    if (baseline === undefined) return
    // A child process's pipes and a TCP peer's FIN can take a few timer turns to be reaped: settle first.
    await Effect.runPromise(expectHandlesBack(baseline, { settleMillis: 3000, label: "after the file's last test" }))
  }, 10_000)
}

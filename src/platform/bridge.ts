/**
 * The one module in `src/` allowed to use raw timers and promises (see eslint.config.js): the few places
 * where pilotfish must act outside Effect's runtime.
 */

/**
 * Arms a last-resort shutdown deadline: on the first SIGTERM or SIGINT a timer starts, and if the process is
 * still alive when it fires, it exits with `exitCode`. The graceful path (Effect interrupting the main fiber,
 * running every finalizer) normally ends the process long before; this exists because repeated signals do
 * not force an exit in Effect's runMain, and a supervisor must be able to rely on a bounded stop. The timer is
 * unref'd, so it never keeps the process alive on its own.
 */
export const armShutdownDeadline = (deadlineMs: number, exitCode: number, onOverrun: () => void): void => {
  const arm = () => {
    process.off("SIGTERM", arm)
    process.off("SIGINT", arm)
    setTimeout(() => {
      onOverrun()
      process.exit(exitCode)
    }, deadlineMs).unref()
  }
  process.on("SIGTERM", arm)
  process.on("SIGINT", arm)
}

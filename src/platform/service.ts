/**
 * How every long-running pilotfish binary runs: parse the command line, resolve settings, then run the
 * service body under the operator's logging until it fails or a signal asks it to stop.
 *
 * - SIGTERM/SIGINT interrupt the main fiber; every finalizer runs (sockets closed, state saved, discovery
 *   entries retracted) and the process exits 0. A last-resort deadline ends a shutdown that overruns.
 * - A failure is logged once, with its cause, and mapped to a documented exit code (`exit-codes.ts`).
 * - Settings errors (bad flags or config) are printed as `error:` / `hint:` lines, exit code 2.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Console, Effect, type Layer } from "effect"
import { CliConfig, Command, GlobalFlag } from "effect/cli"
import { armShutdownDeadline } from "./bridge.ts"
import { ExitCode, teardown } from "./exit-codes.ts"
import { VERSION } from "./version.ts"

/** Runs `body` (the service, already configured) with `logging`, logging how it ended. */
export const serviceBody = <E, R>(name: string, body: Effect.Effect<unknown, E, R>, logging: Layer.Layer<never>) =>
  body.pipe(
    Effect.onExit((exit) =>
      exit._tag === "Failure" && !Cause.hasInterruptsOnly(exit.cause)
        ? Effect.logError(`${name} failed`, exit.cause)
        : Effect.logInfo(`${name} stopped`)
    ),
    Effect.provide(logging)
  )

/** Prints a settings error the way every CLI tool does, before any logging is set up. */
export const reportSettingsError = <E extends { readonly message: string; readonly hint?: string }>(error: E) =>
  Console.error(error.hint === undefined ? `error: ${error.message}` : `error: ${error.message}\nhint: ${error.hint}`)

/** The process entry point of a service binary. */
export const runServiceBinary = <Name extends string, Input, E, ContextInput>(
  command: Command.Command<Name, Input, ContextInput, E, NodeServices.NodeServices>,
  options: { readonly shutdownDeadlineMs: number }
): void => {
  armShutdownDeadline(options.shutdownDeadlineMs, ExitCode.shutdownOverran, () =>
    process.stderr.write(`shutdown overran its ${options.shutdownDeadlineMs} ms deadline; exiting by force\n`))
  NodeRuntime.runMain(
    Command.run(command, { version: VERSION }).pipe(
      // Our binaries own `--log-level` (with `--log-format` and the config file); the built-in one would shadow
      // it, and an interactive wizard has no place in a service.
      Effect.provideService(CliConfig.CliConfig, { builtIns: [GlobalFlag.Help, GlobalFlag.Version, GlobalFlag.Completions] }),
      Effect.provide(NodeServices.layer)
    ),
    { disableErrorReporting: true, teardown }
  )
}

/**
 * `pilotctl`: the command-line client of the daemon (reference §10). The parser is built from the command
 * table in `commands.ts`. Output contract:
 * - success: `--json` → stdout `{"status":"ok","data":…}`; otherwise the data as pretty JSON. Exit 0.
 * - failure: `--json` → stderr `{"status":"error","code":…,"message":…,"hint":…}`; otherwise `error: …` and
 *   `hint: …` lines. Exit 1.
 * - usage errors (unknown command, bad flag, missing argument): help and the parse error, exit 2; with `--json`
 *   also an `invalid_argument` envelope on stderr.
 * Global settings come from flags, the environment and the config file, in the order documented in `config.ts`.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Console, Duration, Effect, Option } from "effect"
import { Argument, CliConfig, Command, Flag, GlobalFlag } from "effect/cli"
import { isCliError } from "effect/cli/CliError"
import { teardown } from "../platform/exit-codes.ts"
import { VERSION } from "../platform/version.ts"
import { COMMANDS, type CommandSpec, GLOBAL_FLAGS, type Invocation, type ParamSpec, SILENT } from "./commands.ts"
import { loadConfig, resolveSetting } from "./config.ts"
import { ctlError, type CtlError, Reported, UsageFailed } from "./errors.ts"
import { DEFAULT_SOCKET } from "./ipc-client.ts"

const DEFAULT_REGISTRY = "127.0.0.1:9000"
const DEFAULT_TIMEOUT = Duration.seconds(30)

// ---- output -------------------------------------------------------------------------------------------------

const successText = (json: boolean, data: unknown): string =>
  json ? JSON.stringify({ status: "ok", data }) : JSON.stringify(data, null, 2)

const errorText = (json: boolean, error: CtlError): string => {
  if (json) return JSON.stringify({ status: "error", code: error.code, message: error.message, ...(error.hint === undefined ? {} : { hint: error.hint }) })
  return error.hint === undefined ? `error: ${error.message}` : `error: ${error.message}\nhint: ${error.hint}`
}

// ---- settings -----------------------------------------------------------------------------------------------

/** Go duration syntax, the subset people type: `250ms`, `30s`, `1.5m`, `2h`. */
const parseGoDuration = (text: string): Duration.Duration | undefined => {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text)
  if (match === null) return undefined
  const value = Number(match[1])
  const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] as "ms" | "s" | "m" | "h"]
  return Duration.millis(value * unitMs)
}

const plain = (value: unknown): unknown => Option.isOption(value) ? Option.getOrUndefined(value) : value

const invocationOf = (globals: { readonly [name: string]: unknown }, params: { readonly [name: string]: unknown }): Effect.Effect<Invocation, CtlError> =>
  Effect.gen(function*() {
    const given = (name: string) => plain(globals[name]) as string | undefined
    const config = yield* loadConfig(given("config"))
    const timeoutText = resolveSetting(given("timeout"), undefined, config, "timeout")
    const timeout = timeoutText === undefined ? DEFAULT_TIMEOUT : parseGoDuration(timeoutText)
    if (timeout === undefined) return yield* ctlError("invalid_argument", `--timeout "${timeoutText}" is not a duration`, "use Go syntax: 500ms, 30s, 2m")
    return {
      socket: resolveSetting(given("socket"), process.env["PILOT_SOCKET"], config, "socket") ?? DEFAULT_SOCKET,
      registry: resolveSetting(given("registry"), process.env["PILOT_REGISTRY"], config, "registry") ?? DEFAULT_REGISTRY,
      timeout,
      params: Object.fromEntries(Object.entries(params).map(([name, value]) => [name, plain(value)]))
    }
  })

// ---- parser, built from the table ---------------------------------------------------------------------------

const flagOf = (param: ParamSpec): Flag.Flag<unknown> => {
  switch (param.kind) {
    case "boolean":
      return Flag.Boolean(param.name).pipe(Flag.withDescription(param.description), Flag.withDefault(false))
    case "int":
      return Flag.Int(param.name).pipe(Flag.withDescription(param.description), Flag.optional)
    case "string":
      return Flag.String(param.name).pipe(Flag.withDescription(param.description), Flag.optional)
  }
}

const argumentOf = (param: ParamSpec): Argument.Argument<unknown> => {
  const typed: Argument.Argument<string | number> = param.kind === "int" ? Argument.Int(param.name) : Argument.String(param.name)
  const base = typed.pipe(Argument.withDescription(param.description))
  if (param.variadic === true) return base.pipe(Argument.variadic())
  return param.optional === true ? base.pipe(Argument.optional) : base
}

const root = Command.make("pilotctl").pipe(
  Command.withSharedFlags(Object.fromEntries(GLOBAL_FLAGS.map((param) => [param.name, flagOf(param)]))),
  Command.withDescription("command-line client of pilot-daemon")
)

const leaf = (spec: CommandSpec) => {
  const config = Object.fromEntries([...spec.args.map((a) => [a.name, argumentOf(a)] as const), ...spec.flags.map((f) => [f.name, flagOf(f)] as const)])
  return Command.make(spec.path.at(-1)!, config, (params) =>
    Effect.gen(function*() {
      const globals = yield* root
      const json = globals["json"] === true
      const outcome = yield* invocationOf(globals, params).pipe(Effect.flatMap(spec.run), Effect.result)
      if (outcome._tag === "Success") {
        if (outcome.success !== SILENT) yield* Console.log(successText(json, outcome.success))
        return
      }
      const error = outcome.failure
      if (error._tag === "CtlError") yield* Console.error(errorText(json, error))
      return yield* new Reported()
    })).pipe(Command.withDescription(spec.description))
}

type AnyCommand = ReturnType<typeof leaf>

const commandTree = (): ReadonlyArray<AnyCommand> => {
  const top: Array<AnyCommand> = []
  const groups = new Map<string, Array<AnyCommand>>()
  for (const spec of COMMANDS) {
    if (spec.path.length === 1) top.push(leaf(spec))
    else {
      const group = groups.get(spec.path[0]!) ?? []
      group.push(leaf(spec))
      groups.set(spec.path[0]!, group)
    }
  }
  for (const [name, children] of groups) {
    const group = Command.make(name).pipe(Command.withDescription(`${name} commands`), Command.withSubcommands(children))
    top.push(group as unknown as AnyCommand)
  }
  return top
}

const pilotctl = root.pipe(Command.withSubcommands(commandTree()))

const wantsJson = process.argv.slice(2).includes("--json")

NodeRuntime.runMain(
  Command.run(pilotctl, { version: VERSION, renderErrors: false }).pipe(
    Effect.catchIf(
      (error) => isCliError(error) && error._tag === "ShowHelp" && error.errors.length > 0,
      (error) => {
        const detail = isCliError(error) && error._tag === "ShowHelp" ? error.errors.map((e) => e.message).join("; ") : error.message
        const report = wantsJson ? Console.error(errorText(true, ctlError("invalid_argument", detail, "see pilotctl --help or pilotctl context"))) : Effect.void
        return Effect.andThen(report, Effect.fail(new UsageFailed({ detail })))
      }
    ),
    // `daemon start` owns `--log-level` (passed to pilot-daemon); the CLI library's own would shadow it.
    Effect.provideService(CliConfig.CliConfig, { builtIns: [GlobalFlag.Help, GlobalFlag.Version, GlobalFlag.Completions] }),
    Effect.provide(NodeServices.layer)
  ),
  { disableErrorReporting: true, teardown }
)

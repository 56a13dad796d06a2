/**
 * Settings from a JSON config file under the command line: every binary takes `--config PATH`, whose keys are
 * flag names (`log-level` or `log_level`), and a flag given on the command line wins over the file, which wins
 * over the default (reference §10, DESIGN.md §1).
 */
import { Effect, FileSystem, Option, Runtime, Schema } from "effect"
import { ExitCode } from "./exit-codes.ts"

/** The `source` of settings errors that come from flags rather than a file. */
export const COMMAND_LINE = "command line"

export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  source: Schema.String,
  detail: Schema.String
}) {
  override readonly [Runtime.errorExitCode] = ExitCode.usage
  get code(): string {
    return "invalid_config"
  }
  get hint(): string {
    return this.source === COMMAND_LINE
      ? "run with --help to see the flags and their values"
      : `fix ${this.source}; its keys are flag names, e.g. {"log-level": "debug"}, and a flag given on the command line wins`
  }
  override get message(): string {
    return `${this.source}: ${this.detail}`
  }
}

export type ConfigValues = Readonly<Record<string, unknown>>

/** Reads `path` as a JSON object with flag-named keys (underscores read as hyphens); no path, no values. */
export const loadConfigFile = Effect.fnUntraced(function*(path: Option.Option<string>) {
  if (Option.isNone(path)) return {} as ConfigValues
  const fs = yield* FileSystem.FileSystem
  const text = yield* fs.readFileString(path.value).pipe(
    Effect.mapError((e) => new ConfigError({ source: path.value, detail: e.message }))
  )
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (e) {
    return yield* new ConfigError({ source: path.value, detail: `not valid JSON: ${(e as Error).message}` })
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return yield* new ConfigError({ source: path.value, detail: "expected a JSON object" })
  }
  return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k.replaceAll("_", "-"), v])) as ConfigValues
})

type Kind = "string" | "boolean" | "number"
type KindType = { string: string; boolean: boolean; number: number }

/**
 * The value of setting `name`: the flag if given, else the config file's entry (type-checked), else absent.
 * `source` names the config file in errors.
 */
export const setting = <K extends Kind>(
  name: string,
  kind: K,
  flag: Option.Option<KindType[K]>,
  config: ConfigValues,
  source: string
): Effect.Effect<Option.Option<KindType[K]>, ConfigError> => {
  if (Option.isSome(flag)) return Effect.succeed(flag)
  const value = config[name]
  if (value === undefined) return Effect.succeed(Option.none())
  return typeof value === kind
    ? Effect.succeed(Option.some(value as KindType[K]))
    : Effect.fail(new ConfigError({ source, detail: `"${name}" must be a ${kind}, got ${JSON.stringify(value)}` }))
}

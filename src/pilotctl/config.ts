/**
 * pilotctl's config file: defaults for its global settings, so an agent can set its socket and registry once.
 *
 * The file is `--config PATH`, else `~/.pilot/config.json` when it exists. It is a JSON object whose keys are
 * global flag names (`socket`, `registry`, `timeout`); other keys are ignored, because the same file may carry
 * settings for other tools. Precedence, highest first:
 *   1. the command-line flag (`--socket`, `--registry`, `--timeout`)
 *   2. the environment (`PILOT_SOCKET`, `PILOT_REGISTRY`)
 *   3. the config file
 *   4. the built-in default
 * An explicit `--config` that is missing or unreadable is an error; a missing default file is not.
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ctlError, type CtlError } from "./errors.ts"

export const CONFIG_KEYS = ["socket", "registry", "timeout"] as const
export type ConfigKey = (typeof CONFIG_KEYS)[number]
export type CtlConfig = { readonly [K in ConfigKey]?: string }

export const defaultConfigPath = (): string => path.join(os.homedir(), ".pilot", "config.json")

/** The known keys of a parsed config file; a known key with a non-string value is an error. */
export const parseConfig = (file: string, json: unknown): Effect.Effect<CtlConfig, CtlError> => {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return Effect.fail(ctlError("invalid_argument", `config ${file}: expected a JSON object`))
  }
  const config: { [K in ConfigKey]?: string } = {}
  for (const key of CONFIG_KEYS) {
    const value = (json as Record<string, unknown>)[key]
    if (value === undefined) continue
    if (typeof value !== "string") return Effect.fail(ctlError("invalid_argument", `config ${file}: "${key}" must be a string`))
    config[key] = value
  }
  return Effect.succeed(config)
}

export const loadConfig = (explicitPath: string | undefined): Effect.Effect<CtlConfig, CtlError> =>
  Effect.suspend(() => {
    const file = explicitPath ?? defaultConfigPath()
    let text: string
    try {
      text = fs.readFileSync(file, "utf8")
    } catch (error) {
      if (explicitPath === undefined && (error as NodeJS.ErrnoException).code === "ENOENT") return Effect.succeed({})
      return Effect.fail(ctlError(explicitPath === undefined ? "internal" : "invalid_argument", `config ${file}: ${(error as Error).message}`))
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch (error) {
      return Effect.fail(ctlError("invalid_argument", `config ${file}: not JSON (${(error as Error).message})`))
    }
    return parseConfig(file, json)
  })

/** One setting by the precedence above; `env` is the variable's value (undefined when unset or none exists). */
export const resolveSetting = (flag: string | undefined, env: string | undefined, config: CtlConfig, key: ConfigKey): string | undefined =>
  flag ?? env ?? config[key]

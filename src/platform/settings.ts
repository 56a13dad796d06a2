/**
 * Validation of resolved settings shared by every binary's `resolveSettings`: each check fails with a
 * `ConfigError` naming where the bad value came from (`source`: the config file or the command line).
 */
import { Effect, Option } from "effect"
import { ConfigError } from "./config-file.ts"
import { type HostPort, parseHostPort } from "./host-port.ts"

/** `text` as a listen or dial address (`host:port`, `:port`, `[v6]:port`). */
export const address = (name: string, text: string, source: string): Effect.Effect<HostPort, ConfigError> => {
  const parsed = parseHostPort(text)
  return typeof parsed === "string" ? Effect.fail(new ConfigError({ source, detail: `--${name}: ${parsed}` })) : Effect.succeed(parsed)
}

/** An optional address: absent stays absent. */
export const optionalAddress = (name: string, text: Option.Option<string>, source: string): Effect.Effect<Option.Option<HostPort>, ConfigError> =>
  Option.isSome(text) ? Effect.map(address(name, text.value, source), Option.some) : Effect.succeed(Option.none())

/** One of `allowed`, or `fallback` when absent. */
export const oneOf = <A extends string>(
  name: string,
  allowed: ReadonlyArray<A>,
  value: Option.Option<string>,
  fallback: A,
  source: string
): Effect.Effect<A, ConfigError> =>
  Option.match(value, {
    onNone: () => Effect.succeed(fallback),
    onSome: (v) =>
      (allowed as ReadonlyArray<string>).includes(v)
        ? Effect.succeed(v as A)
        : Effect.fail(new ConfigError({ source, detail: `"${name}" must be one of ${allowed.join(", ")}, got "${v}"` }))
  })

/** A positive integer, or `fallback` when absent. */
export const positive = (name: string, value: Option.Option<number>, fallback: number, source: string): Effect.Effect<number, ConfigError> => {
  const n = Option.getOrElse(value, () => fallback)
  return Number.isInteger(n) && n > 0 ? Effect.succeed(n) : Effect.fail(new ConfigError({ source, detail: `"${name}" must be a positive integer, got ${n}` }))
}

/**
 * `pilot-rendezvous`: the registry and a beacon in one supervised process (DESIGN.md §1), the one-command way to
 * stand up a network. Flags follow the reference binary; each can also come from `--config FILE` (flags win).
 * What it serves, and how, is `rendezvous.ts` (shared with `npm start`, `src/quickstart/main.ts`).
 *
 * The registry sees the beacon's registration from 127.0.0.1, so when `--beacon-addr` names no host the beacon
 * advertises `127.0.0.1:<port>`; in a network with beacons on other hosts, give `--beacon-addr PUBLIC_IP:9001`
 * so the address the registry hands out is reachable.
 *
 * One `--http` endpoint serves `/health` (ok while the store answers; the beacon's loops are supervised, so a
 * dead beacon ends the process), `/ready` (the same, with the beacon's registration in the details) and
 * `/metrics` (both metric sets: `pilot_registry_*` and `pilot_beacon_*`). Exit codes are the registry's.
 */
import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { COMMAND_LINE, ConfigError, type ConfigValues, loadConfigFile, setting } from "../platform/config-file.ts"
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevelName, loggingLayer } from "../platform/logging.ts"
import { reportSettingsError, runServiceBinary, serviceBody } from "../platform/service.ts"
import { address, oneOf, optionalAddress } from "../platform/settings.ts"
import { type RendezvousSettings, serveRendezvous } from "./rendezvous.ts"

const flags = {
  registryAddr: Flag.String("registry-addr").pipe(Flag.withDescription("registry TCP address (default :9000)"), Flag.optional),
  beaconAddr: Flag.String("beacon-addr").pipe(Flag.withDescription("beacon UDP address (default :9001)"), Flag.optional),
  store: Flag.String("store").pipe(Flag.withDescription("snapshot file of the embedded store (default: memory only)"), Flag.optional),
  redis: Flag.String("redis").pipe(Flag.withDescription("Redis URL: keep registry state in Redis"), Flag.optional),
  http: Flag.String("http").pipe(Flag.withDescription("address for /health, /ready and /metrics (default: off)"), Flag.optional),
  logLevel: Flag.Literals("log-level", LOG_LEVELS).pipe(Flag.withDescription("trace|debug|info|warn|error (default info)"), Flag.optional),
  logFormat: Flag.Literals("log-format", LOG_FORMATS).pipe(Flag.withDescription("text|json (default text)"), Flag.optional),
  config: Flag.String("config").pipe(Flag.withDescription("JSON file of settings; keys are flag names"), Flag.optional)
}

type FlagValues = { readonly [K in keyof typeof flags]: (typeof flags)[K] extends Flag.Flag<infer A> ? A : never }

interface Settings extends RendezvousSettings {
  readonly logLevel: LogLevelName
  readonly logFormat: LogFormat
}

const resolveSettings = (given: FlagValues) =>
  Effect.gen(function*() {
    const config: ConfigValues = yield* loadConfigFile(given.config)
    const source = Option.getOrElse(given.config, () => COMMAND_LINE)
    const str = (name: string, flag: Option.Option<string>) => setting(name, "string", flag, config, source)
    const settings: Settings = {
      registryAddr: yield* address("registry-addr", Option.getOrElse(yield* str("registry-addr", given.registryAddr), () => ":9000"), source),
      beaconAddr: yield* address("beacon-addr", Option.getOrElse(yield* str("beacon-addr", given.beaconAddr), () => ":9001"), source),
      store: yield* str("store", given.store),
      redis: yield* str("redis", given.redis),
      http: yield* optionalAddress("http", yield* str("http", given.http), source),
      logLevel: yield* oneOf("log-level", LOG_LEVELS, yield* str("log-level", given.logLevel), "info", source),
      logFormat: yield* oneOf("log-format", LOG_FORMATS, yield* str("log-format", given.logFormat), "text", source)
    }
    if (Option.isSome(settings.store) && Option.isSome(settings.redis)) {
      return yield* new ConfigError({ source, detail: "--store and --redis are exclusive: pick one store" })
    }
    return settings
  })

const serve = (settings: Settings) =>
  Effect.scoped(Effect.flatMap(serveRendezvous(settings), (rendezvous) => rendezvous.failure))

const command = Command.make("pilot-rendezvous", flags, (given) =>
  resolveSettings(given).pipe(
    Effect.tapError(reportSettingsError),
    Effect.flatMap((settings) =>
      serviceBody("pilot-rendezvous", serve(settings), loggingLayer({ level: settings.logLevel, format: settings.logFormat })))
  )).pipe(Command.withDescription("pilotfish rendezvous: a registry and a beacon in one process"))

runServiceBinary(command, { shutdownDeadlineMs: 15_000 })

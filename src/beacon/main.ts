/**
 * `pilot-beacon`: endpoint discovery, hole-punch coordination and relay (DESIGN.md §1, reference §7). Flags
 * follow the reference binary; each can also come from `--config FILE` (flags win).
 *
 * `/health` and `/metrics` are served on `--health ADDR` (the reference's flag name). Health is ok while the
 * beacon serves (its socket loops are supervised: if one dies the process exits 4); `/ready` is ok once the
 * socket is bound, and reports the registry registration in its details ("serving" and "registered" are
 * separate states, DESIGN.md §4 rule 3).
 */
import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { supervise } from "../lifecycle/supervisor.ts"
import { COMMAND_LINE, ConfigError, type ConfigValues, loadConfigFile, setting } from "../platform/config-file.ts"
import { formatHostPort, type HostPort } from "../platform/host-port.ts"
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevelName, loggingLayer } from "../platform/logging.ts"
import { serveOpsHttp } from "../platform/ops-http.ts"
import { reportSettingsError, runServiceBinary, serviceBody } from "../platform/service.ts"
import { address, oneOf, optionalAddress } from "../platform/settings.ts"
import { beaconDetails, makeBeacon } from "./beacon.ts"

const flags = {
  addr: Flag.String("addr").pipe(Flag.withDescription("UDP address to serve on (default :9001)"), Flag.optional),
  registry: Flag.String("registry").pipe(Flag.withDescription("registry to register with and list peer beacons from (default: none)"), Flag.optional),
  peers: Flag.String("peers").pipe(Flag.withDescription("static peer beacons, comma-separated host:port"), Flag.optional),
  beaconId: Flag.Int("beacon-id").pipe(Flag.withDescription("this beacon's ID, 1-4294967295 (default: random, logged)"), Flag.optional),
  health: Flag.String("health").pipe(Flag.withDescription("address for /health, /ready and /metrics (default: off)"), Flag.optional),
  logLevel: Flag.Literals("log-level", LOG_LEVELS).pipe(Flag.withDescription("trace|debug|info|warn|error (default info)"), Flag.optional),
  logFormat: Flag.Literals("log-format", LOG_FORMATS).pipe(Flag.withDescription("text|json (default text)"), Flag.optional),
  config: Flag.String("config").pipe(Flag.withDescription("JSON file of settings; keys are flag names"), Flag.optional)
}

type FlagValues = { readonly [K in keyof typeof flags]: (typeof flags)[K] extends Flag.Flag<infer A> ? A : never }

export interface BeaconSettings {
  readonly addr: HostPort
  readonly registry: Option.Option<HostPort>
  readonly peers: ReadonlyArray<string>
  readonly beaconId: Option.Option<number>
  readonly health: Option.Option<HostPort>
  readonly logLevel: LogLevelName
  readonly logFormat: LogFormat
}

/** `A,B` → the addresses, each checked as `host:port`. */
export const peerList = (text: Option.Option<string>, source: string) =>
  Effect.gen(function*() {
    if (Option.isNone(text)) return [] as ReadonlyArray<string>
    const peers = text.value.split(",").map((p) => p.trim()).filter((p) => p !== "")
    for (const peer of peers) yield* address("peers", peer, source)
    return peers
  })

/** A beacon ID: a non-zero u32. */
export const beaconIdSetting = (value: Option.Option<number>, source: string) =>
  Option.isSome(value) && !(Number.isInteger(value.value) && value.value >= 1 && value.value <= 0xffffffff)
    ? Effect.fail(new ConfigError({ source, detail: `"beacon-id" must be an integer 1-4294967295, got ${value.value}` }))
    : Effect.succeed(value)

const resolveSettings = (given: FlagValues) =>
  Effect.gen(function*() {
    const config: ConfigValues = yield* loadConfigFile(given.config)
    const source = Option.getOrElse(given.config, () => COMMAND_LINE)
    const str = (name: string, flag: Option.Option<string>) => setting(name, "string", flag, config, source)
    const settings: BeaconSettings = {
      addr: yield* address("addr", Option.getOrElse(yield* str("addr", given.addr), () => ":9001"), source),
      registry: yield* optionalAddress("registry", yield* str("registry", given.registry), source),
      peers: yield* peerList(yield* str("peers", given.peers), source),
      beaconId: yield* beaconIdSetting(yield* setting("beacon-id", "number", given.beaconId, config, source), source),
      health: yield* optionalAddress("health", yield* str("health", given.health), source),
      logLevel: yield* oneOf("log-level", LOG_LEVELS, yield* str("log-level", given.logLevel), "info", source),
      logFormat: yield* oneOf("log-format", LOG_FORMATS, yield* str("log-format", given.logFormat), "text", source)
    }
    return settings
  })

const serve = (settings: BeaconSettings) =>
  Effect.gen(function*() {
    const beacon = yield* makeBeacon({
      bind: settings.addr,
      peers: settings.peers,
      ...(Option.isSome(settings.beaconId) ? { beaconId: settings.beaconId.value } : {}),
      ...(Option.isSome(settings.registry) ? { registry: { host: settings.registry.value.host ?? "127.0.0.1", port: settings.registry.value.port } } : {})
    })
    if (Option.isSome(settings.health)) {
      const probe = Effect.sync(() => ({ ok: true, details: beaconDetails(beacon) }))
      const httpBound = yield* serveOpsHttp(settings.health.value, { health: probe, ready: probe })
      const httpText = httpBound._tag === "UnixPathAddress" ? httpBound.path : formatHostPort({ host: httpBound.address.toString(), port: httpBound.port })
      yield* Effect.logInfo("health and metrics served").pipe(Effect.annotateLogs({ http: httpText }))
    }
    return yield* supervise({ beacon: beacon.failure })
  }).pipe(Effect.scoped)

const command = Command.make("pilot-beacon", flags, (given) =>
  resolveSettings(given).pipe(
    Effect.tapError(reportSettingsError),
    Effect.flatMap((settings) => serviceBody("pilot-beacon", serve(settings), loggingLayer({ level: settings.logLevel, format: settings.logFormat })))
  )).pipe(Command.withDescription("pilotfish beacon: endpoint discovery, hole-punch coordination and relay"))

// Bounded under this: a registry call in flight (8 s) is interrupted, the socket closes at once.
runServiceBinary(command, { shutdownDeadlineMs: 10_000 })

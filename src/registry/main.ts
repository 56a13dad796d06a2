/**
 * `pilot-registry`: the directory server (DESIGN.md §1). Flags follow the reference binary; each can also
 * come from `--config FILE` (flags win).
 */
import { Clock, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { supervise } from "../lifecycle/supervisor.ts"
import { COMMAND_LINE, ConfigError, type ConfigValues, loadConfigFile, setting } from "../platform/config-file.ts"
import { formatHostPort, type HostPort } from "../platform/host-port.ts"
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevelName, loggingLayer } from "../platform/logging.ts"
import { serveOpsHttp } from "../platform/ops-http.ts"
import { reportSettingsError, runServiceBinary, serviceBody } from "../platform/service.ts"
import { address, oneOf, optionalAddress, positive } from "../platform/settings.ts"
import { makeRegistry } from "./registry.ts"
import { RegistryStore } from "./store.ts"
import { storeDescription, storeLayer } from "./store-settings.ts"

const flags = {
  addr: Flag.String("addr").pipe(Flag.withDescription("TCP address to serve on (default :9000)"), Flag.optional),
  store: Flag.String("store").pipe(Flag.withDescription("snapshot file of the embedded store (default: memory only)"), Flag.optional),
  redis: Flag.String("redis").pipe(Flag.withDescription("Redis URL: keep state in Redis, shared by every registry using it"), Flag.optional),
  registrationRate: Flag.Int("registration-rate").pipe(
    Flag.withDescription("new-key registrations allowed per source IP per minute (default 10)"),
    Flag.optional
  ),
  http: Flag.String("http").pipe(Flag.withDescription("address for /health and /metrics (default: off)"), Flag.optional),
  logLevel: Flag.Literals("log-level", LOG_LEVELS).pipe(Flag.withDescription("trace|debug|info|warn|error (default info)"), Flag.optional),
  logFormat: Flag.Literals("log-format", LOG_FORMATS).pipe(Flag.withDescription("text|json (default text)"), Flag.optional),
  config: Flag.String("config").pipe(Flag.withDescription("JSON file of settings; keys are flag names"), Flag.optional)
}

interface RegistrySettings {
  readonly addr: HostPort
  readonly store: Option.Option<string>
  readonly redis: Option.Option<string>
  readonly http: Option.Option<HostPort>
  readonly registrationRate: number
  readonly logLevel: LogLevelName
  readonly logFormat: LogFormat
}

const resolveSettings = (given: typeof flags extends infer F ? { [K in keyof F]: F[K] extends Flag.Flag<infer A> ? A : never } : never) =>
  Effect.gen(function*() {
    const config: ConfigValues = yield* loadConfigFile(given.config)
    const source = Option.getOrElse(given.config, () => COMMAND_LINE)
    const str = (name: string, flag: Option.Option<string>) => setting(name, "string", flag, config, source)
    const addrText = Option.getOrElse(yield* str("addr", given.addr), () => ":9000")
    const httpText = yield* str("http", given.http)
    const settings: RegistrySettings = {
      addr: yield* address("addr", addrText, source),
      store: yield* str("store", given.store),
      redis: yield* str("redis", given.redis),
      http: yield* optionalAddress("http", httpText, source),
      registrationRate: yield* positive("registration-rate", yield* setting("registration-rate", "number", given.registrationRate, config, source), 10, source),
      logLevel: yield* oneOf("log-level", LOG_LEVELS, yield* str("log-level", given.logLevel), "info", source),
      logFormat: yield* oneOf("log-format", LOG_FORMATS, yield* str("log-format", given.logFormat), "text", source)
    }
    if (Option.isSome(settings.store) && Option.isSome(settings.redis)) {
      return yield* new ConfigError({ source, detail: "--store and --redis are exclusive: pick one store" })
    }
    return settings
  })

const serve = (settings: RegistrySettings) =>
  Effect.gen(function*() {
    const startedMs = yield* Clock.currentTimeMillis
    const store = yield* RegistryStore
    const registry = yield* makeRegistry({
      port: settings.addr.port,
      registrationsPerMinute: settings.registrationRate,
      ...(settings.addr.host === undefined ? {} : { host: settings.addr.host })
    })
    const bound = registry.address._tag === "UnixPathAddress" ? registry.address.path : formatHostPort({ host: registry.address.address.toString(), port: registry.address.port })
    yield* Effect.logInfo("pilot-registry serving").pipe(Effect.annotateLogs({ addr: bound, store: storeDescription(settings) }))
    const probe = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const nodes = yield* store.nodesOnline(now).pipe(Effect.timeout("1 second"), Effect.option)
      return {
        ok: Option.isSome(nodes),
        details: { nodes_online: Option.getOrNull(nodes), store: storeDescription(settings), uptime_seconds: Math.floor((now - startedMs) / 1000) }
      }
    })
    if (Option.isSome(settings.http)) {
      const httpBound = yield* serveOpsHttp(settings.http.value, { health: probe, ready: probe })
      const httpText = httpBound._tag === "UnixPathAddress" ? httpBound.path : formatHostPort({ host: httpBound.address.toString(), port: httpBound.port })
      yield* Effect.logInfo("health and metrics served").pipe(Effect.annotateLogs({ http: httpText }))
    }
    return yield* supervise({ "registry-tcp": registry.failure })
  }).pipe(Effect.scoped, Effect.provide(storeLayer(settings)))

const command = Command.make("pilot-registry", flags, (given) =>
  resolveSettings(given).pipe(
    Effect.tapError(reportSettingsError),
    Effect.flatMap((settings) =>
      serviceBody("pilot-registry", serve(settings), loggingLayer({ level: settings.logLevel, format: settings.logFormat })))
  )).pipe(Command.withDescription("pilotfish registry: node directory, trust pairs and relayed handshakes"))

runServiceBinary(command, { shutdownDeadlineMs: 15_000 })

/**
 * `pilot-rendezvous`: the registry and a beacon in one supervised process (DESIGN.md §1), the one-command way to
 * stand up a network. Flags follow the reference binary; each can also come from `--config FILE` (flags win).
 *
 * The beacon registers itself with the in-process registry over loopback, like any other beacon: its peers
 * (other beacons registered with the same registry) come from `beacon_list`. The registry sees that
 * registration from 127.0.0.1, so when `--beacon-addr` names no host the beacon advertises `127.0.0.1:<port>`;
 * in a network with beacons on other hosts, give `--beacon-addr PUBLIC_IP:9001` so the address the registry
 * hands out is reachable.
 *
 * One `--http` endpoint serves `/health` (ok while the store answers; the beacon's loops are supervised, so a
 * dead beacon ends the process), `/ready` (the same, with the beacon's registration in the details) and
 * `/metrics` (both metric sets: `pilot_registry_*` and `pilot_beacon_*`). Exit codes are the registry's.
 */
import { Clock, Effect, Layer, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { beaconDetails, makeBeacon } from "../beacon/beacon.ts"
import { supervise } from "../lifecycle/supervisor.ts"
import { COMMAND_LINE, ConfigError, type ConfigValues, loadConfigFile, setting } from "../platform/config-file.ts"
import { localFileSystem } from "../platform/file-system.ts"
import { formatHostPort, type HostPort } from "../platform/host-port.ts"
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevelName, loggingLayer } from "../platform/logging.ts"
import { serveOpsHttp } from "../platform/ops-http.ts"
import { reportSettingsError, runServiceBinary, serviceBody } from "../platform/service.ts"
import { address, oneOf, optionalAddress } from "../platform/settings.ts"
import { layerEmbeddedStore } from "../registry/embedded-store.ts"
import { layerRedisStore } from "../registry/redis-store.ts"
import { makeRegistry } from "../registry/registry.ts"
import { RegistryStore } from "../registry/store.ts"

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

interface RendezvousSettings {
  readonly registryAddr: HostPort
  readonly beaconAddr: HostPort
  readonly store: Option.Option<string>
  readonly redis: Option.Option<string>
  readonly http: Option.Option<HostPort>
  readonly logLevel: LogLevelName
  readonly logFormat: LogFormat
}

const resolveSettings = (given: FlagValues) =>
  Effect.gen(function*() {
    const config: ConfigValues = yield* loadConfigFile(given.config)
    const source = Option.getOrElse(given.config, () => COMMAND_LINE)
    const str = (name: string, flag: Option.Option<string>) => setting(name, "string", flag, config, source)
    const settings: RendezvousSettings = {
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

const storeLayer = (settings: RendezvousSettings): Layer.Layer<RegistryStore, unknown> =>
  Option.isSome(settings.redis)
    ? layerRedisStore({ url: settings.redis.value })
    : layerEmbeddedStore(Option.isSome(settings.store) ? { path: settings.store.value } : {}).pipe(Layer.provide(localFileSystem))

const storeDescription = (settings: RendezvousSettings) =>
  Option.isSome(settings.redis) ? "redis" : Option.isSome(settings.store) ? `embedded, snapshot ${settings.store.value}` : "embedded, memory only"

/** A host to dial a listener bound to `host` on this machine. */
const dialHost = (host: string | undefined): string =>
  host === undefined || host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host

const serve = (settings: RendezvousSettings) =>
  Effect.gen(function*() {
    const startedMs = yield* Clock.currentTimeMillis
    const store = yield* RegistryStore
    const registry = yield* makeRegistry({
      port: settings.registryAddr.port,
      ...(settings.registryAddr.host === undefined ? {} : { host: settings.registryAddr.host })
    })
    if (registry.address._tag === "UnixPathAddress") return yield* Effect.die("registry is not on TCP")
    const registryPort = registry.address.port
    const registryBound = formatHostPort({ host: registry.address.address.toString(), port: registryPort })
    yield* Effect.logInfo("pilot-registry serving").pipe(Effect.annotateLogs({ addr: registryBound, store: storeDescription(settings) }))
    const beacon = yield* makeBeacon({
      bind: settings.beaconAddr,
      registry: { host: dialHost(settings.registryAddr.host), port: registryPort },
      ...(settings.beaconAddr.host === undefined || settings.beaconAddr.host === "0.0.0.0" || settings.beaconAddr.host === "::"
        ? {}
        : { advertiseHost: settings.beaconAddr.host })
    })
    const probe = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const nodes = yield* store.nodesOnline(now).pipe(Effect.timeout("1 second"), Effect.option)
      return {
        ok: Option.isSome(nodes),
        details: {
          nodes_online: Option.getOrNull(nodes),
          store: storeDescription(settings),
          uptime_seconds: Math.floor((now - startedMs) / 1000),
          beacon: beaconDetails(beacon)
        }
      }
    })
    if (Option.isSome(settings.http)) {
      const httpBound = yield* serveOpsHttp(settings.http.value, { health: probe, ready: probe })
      const httpText = httpBound._tag === "UnixPathAddress" ? httpBound.path : formatHostPort({ host: httpBound.address.toString(), port: httpBound.port })
      yield* Effect.logInfo("health and metrics served").pipe(Effect.annotateLogs({ http: httpText }))
    }
    yield* Effect.logInfo("pilot-rendezvous serving").pipe(Effect.annotateLogs({
      registry: registryBound,
      beacon: formatHostPort({ host: beacon.address.address.toString(), port: beacon.address.port })
    }))
    return yield* supervise({ "registry-tcp": registry.failure, beacon: beacon.failure })
  }).pipe(Effect.scoped, Effect.provide(storeLayer(settings)))

const command = Command.make("pilot-rendezvous", flags, (given) =>
  resolveSettings(given).pipe(
    Effect.tapError(reportSettingsError),
    Effect.flatMap((settings) =>
      serviceBody("pilot-rendezvous", serve(settings), loggingLayer({ level: settings.logLevel, format: settings.logFormat })))
  )).pipe(Command.withDescription("pilotfish rendezvous: a registry and a beacon in one process"))

runServiceBinary(command, { shutdownDeadlineMs: 15_000 })

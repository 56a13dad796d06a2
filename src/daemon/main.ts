/**
 * `pilot-daemon`: one per host or agent (DESIGN.md §1). Flags follow the reference binary; each can also come
 * from `--config FILE` (flags win), and `--socket` / `--registry` from `PILOT_SOCKET` / `PILOT_REGISTRY`
 * (flag, then file, then environment, then default).
 */
import { Config, Effect, FileSystem, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as os from "node:os"
import * as nodePath from "node:path"
import { COMMAND_LINE, ConfigError, type ConfigValues, loadConfigFile, setting } from "../platform/config-file.ts"
import { localFileSystem } from "../platform/file-system.ts"
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevelName, loggingLayer } from "../platform/logging.ts"
import { reportSettingsError, runServiceBinary, serviceBody } from "../platform/service.ts"
import { address, oneOf, optionalAddress } from "../platform/settings.ts"
import { type DaemonSettings, runDaemon } from "./daemon.ts"

const flags = {
  registry: Flag.String("registry").pipe(Flag.withDescription("registry address (env PILOT_REGISTRY; default 127.0.0.1:9000)"), Flag.optional),
  beacon: Flag.String("beacon").pipe(
    Flag.withDescription("beacon address: endpoint discovery, hole punching, relay (env PILOT_BEACON; default 127.0.0.1:9001 when --registry is defaulted too, else none)"),
    Flag.optional
  ),
  relayOnly: Flag.Boolean("relay-only").pipe(Flag.withDescription("register as reachable through the beacon relay only"), Flag.optional),
  listen: Flag.String("listen").pipe(Flag.withDescription("UDP tunnel address (default :0)"), Flag.optional),
  socket: Flag.String("socket").pipe(Flag.withDescription("IPC socket path (env PILOT_SOCKET; default /tmp/pilot.sock)"), Flag.optional),
  endpoint: Flag.String("endpoint").pipe(
    Flag.withDescription("endpoint to register, skipping discovery (default: what the beacon sees, else :<UDP port> with the registry filling in our IP)"),
    Flag.optional
  ),
  identity: Flag.String("identity").pipe(Flag.withDescription("identity file (default ~/.pilot/identity.json)"), Flag.optional),
  public: Flag.Boolean("public").pipe(Flag.withDescription("make this node public: anyone may resolve its endpoint"), Flag.optional),
  hostname: Flag.String("hostname").pipe(Flag.withDescription("hostname to register"), Flag.optional),
  http: Flag.String("http").pipe(Flag.withDescription("address for /health, /ready and /metrics (default: off)"), Flag.optional),
  webhook: Flag.String("webhook").pipe(Flag.withDescription("POST every daemon event as JSON to this URL"), Flag.optional),
  trustAutoApprove: Flag.Boolean("trust-auto-approve").pipe(Flag.withDescription("approve every trust request"), Flag.optional),
  logLevel: Flag.Literals("log-level", LOG_LEVELS).pipe(Flag.withDescription("trace|debug|info|warn|error (default info)"), Flag.optional),
  logFormat: Flag.Literals("log-format", LOG_FORMATS).pipe(Flag.withDescription("text|json (default text)"), Flag.optional),
  config: Flag.String("config").pipe(Flag.withDescription("JSON file of settings; keys are flag names (default ~/.pilot/config.json if it exists)"), Flag.optional)
}

type FlagValues = { readonly [K in keyof typeof flags]: (typeof flags)[K] extends Flag.Flag<infer A> ? A : never }

interface Settings {
  readonly daemon: DaemonSettings
  readonly logLevel: LogLevelName
  readonly logFormat: LogFormat
  /** Flags given that this version accepts but ignores. */
}

/** `~/.pilot/config.json` when it exists (the reference's default config file), else none. */
const defaultConfigFile = Effect.gen(function*() {
  const path = nodePath.join(os.homedir(), ".pilot", "config.json")
  const fs = yield* FileSystem.FileSystem
  return (yield* fs.exists(path).pipe(Effect.orElseSucceed(() => false))) ? Option.some(path) : Option.none<string>()
})

const resolveSettings = (given: FlagValues) =>
  Effect.gen(function*() {
    const configPath = Option.isSome(given.config) ? given.config : yield* defaultConfigFile
    const config: ConfigValues = yield* loadConfigFile(configPath)
    const source = Option.getOrElse(configPath, () => COMMAND_LINE)
    const str = (name: string, flag: Option.Option<string>) => setting(name, "string", flag, config, source)
    const bool = (name: string, flag: Option.Option<boolean>) => setting(name, "boolean", flag, config, source)
    const orEnv = (value: Option.Option<string>, variable: string) =>
      Option.isSome(value) ? Effect.succeed(value) : Config.option(Config.String(variable)).pipe(
        Effect.mapError((e) => new ConfigError({ source: `environment variable ${variable}`, detail: e.message }))
      )

    const registryGiven = yield* orEnv(yield* str("registry", given.registry), "PILOT_REGISTRY")
    const registry = yield* address("registry", Option.getOrElse(registryGiven, () => "127.0.0.1:9000"), source)
    // The single-machine default (DESIGN.md §1): no registry named → the local rendezvous, beacon included.
    const beaconText = Option.orElse(
      yield* orEnv(yield* str("beacon", given.beacon), "PILOT_BEACON"),
      () => Option.isNone(registryGiven) ? Option.some("127.0.0.1:9001") : Option.none()
    )
    const daemon: DaemonSettings = {
      identityPath: Option.getOrElse(yield* str("identity", given.identity), () => nodePath.join(os.homedir(), ".pilot", "identity.json")),
      listen: yield* address("listen", Option.getOrElse(yield* str("listen", given.listen), () => ":0"), source),
      socketPath: Option.getOrElse(yield* orEnv(yield* str("socket", given.socket), "PILOT_SOCKET"), () => "/tmp/pilot.sock"),
      registry: { host: registry.host ?? "127.0.0.1", port: registry.port },
      endpoint: yield* str("endpoint", given.endpoint),
      beacon: yield* optionalAddress("beacon", beaconText, source),
      relayOnly: Option.getOrElse(yield* bool("relay-only", given.relayOnly), () => false),
      hostname: yield* str("hostname", given.hostname),
      http: yield* optionalAddress("http", yield* str("http", given.http), source),
      public: Option.getOrElse(yield* bool("public", given.public), () => false),
      trustAutoApprove: Option.getOrElse(yield* bool("trust-auto-approve", given.trustAutoApprove), () => false),
      webhook: yield* str("webhook", given.webhook)
    }
    const settings: Settings = {
      daemon,
      logLevel: yield* oneOf("log-level", LOG_LEVELS, yield* str("log-level", given.logLevel), "info", source),
      logFormat: yield* oneOf("log-format", LOG_FORMATS, yield* str("log-format", given.logFormat), "text", source)
    }
    return settings
  })

const serve = (settings: Settings) =>
  Effect.gen(function*() {
    return yield* runDaemon(settings.daemon)
  }).pipe(Effect.provide(localFileSystem))

const command = Command.make("pilot-daemon", flags, (given) =>
  resolveSettings(given).pipe(
    Effect.tapError(reportSettingsError),
    Effect.flatMap((settings) => serviceBody("pilot-daemon", serve(settings), loggingLayer({ level: settings.logLevel, format: settings.logFormat })))
  )).pipe(Command.withDescription("pilotfish daemon: identity, encrypted tunnels, transport and the local IPC API"))

// Bounded under this: the deregister (5 s), a register in flight (8 s), IPC drains (3 s).
runServiceBinary(command, { shutdownDeadlineMs: 20_000 })

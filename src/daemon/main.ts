/**
 * `pilot-daemon`: one per host or agent (DESIGN.md §1). Flags follow the reference binary; each can also come
 * from `--config FILE` (flags win), and `--socket` / `--registry` from `PILOT_SOCKET` / `PILOT_REGISTRY`
 * (flag, then file, then environment, then default).
 */
import { Effect, FileSystem, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as os from "node:os"
import * as nodePath from "node:path"
import { COMMAND_LINE, type ConfigValues, loadConfigFile, setting } from "../platform/config-file.ts"
import { localFileSystem } from "../platform/file-system.ts"
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevelName, loggingLayer } from "../platform/logging.ts"
import { reportSettingsError, runServiceBinary, serviceBody } from "../platform/service.ts"
import { address, oneOf, optionalAddress } from "../platform/settings.ts"
import { type DaemonSettings, runDaemon } from "./daemon.ts"
import { nodeFlags, orEnv, resolveNodeSettings } from "./flags.ts"

const flags = {
  registry: Flag.String("registry").pipe(Flag.withDescription("registry address (env PILOT_REGISTRY; default 127.0.0.1:9000)"), Flag.optional),
  beacon: Flag.String("beacon").pipe(
    Flag.withDescription("beacon address: endpoint discovery, hole punching, relay (env PILOT_BEACON; default 127.0.0.1:9001 when --registry is defaulted too, else none)"),
    Flag.optional
  ),
  ...nodeFlags,
  logLevel: Flag.Literals("log-level", LOG_LEVELS).pipe(Flag.withDescription("trace|debug|info|warn|error (default info)"), Flag.optional),
  logFormat: Flag.Literals("log-format", LOG_FORMATS).pipe(Flag.withDescription("text|json (default text)"), Flag.optional),
  config: Flag.String("config").pipe(Flag.withDescription("JSON file of settings; keys are flag names (default ~/.pilot/config.json if it exists)"), Flag.optional)
}

type FlagValues = { readonly [K in keyof typeof flags]: (typeof flags)[K] extends Flag.Flag<infer A> ? A : never }

interface Settings {
  readonly daemon: DaemonSettings
  readonly logLevel: LogLevelName
  readonly logFormat: LogFormat
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
    const registryGiven = yield* orEnv(yield* str("registry", given.registry), "PILOT_REGISTRY")
    const registry = yield* address("registry", Option.getOrElse(registryGiven, () => "127.0.0.1:9000"), source)
    // The single-machine default (DESIGN.md §1): no registry named → the local rendezvous, beacon included.
    const beaconText = Option.orElse(
      yield* orEnv(yield* str("beacon", given.beacon), "PILOT_BEACON"),
      () => Option.isNone(registryGiven) ? Option.some("127.0.0.1:9001") : Option.none()
    )
    const daemon: DaemonSettings = {
      ...(yield* resolveNodeSettings(given, config, source)),
      registry: { host: registry.host ?? "127.0.0.1", port: registry.port },
      beacon: yield* optionalAddress("beacon", beaconText, source)
    }
    const settings: Settings = {
      daemon,
      logLevel: yield* oneOf("log-level", LOG_LEVELS, yield* str("log-level", given.logLevel), "info", source),
      logFormat: yield* oneOf("log-format", LOG_FORMATS, yield* str("log-format", given.logFormat), "text", source)
    }
    return settings
  })

const serve = (settings: Settings) => runDaemon(settings.daemon).pipe(Effect.provide(localFileSystem))

const command = Command.make("pilot-daemon", flags, (given) =>
  resolveSettings(given).pipe(
    Effect.tapError(reportSettingsError),
    Effect.flatMap((settings) => serviceBody("pilot-daemon", serve(settings), loggingLayer({ level: settings.logLevel, format: settings.logFormat })))
  )).pipe(Command.withDescription("pilotfish daemon: identity, encrypted tunnels, transport and the local IPC API"))

// Bounded under this: the deregister (5 s), a register in flight (8 s), IPC drains (3 s).
runServiceBinary(command, { shutdownDeadlineMs: 20_000 })

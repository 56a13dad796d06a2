/**
 * `npm start`: a working node on a fresh machine with no external service (DESIGN.md §1). One process runs a
 * rendezvous (the registry with its embedded store, snapshot `~/.pilot/registry.json`, and a beacon) and a
 * daemon (IPC socket `/tmp/pilot.sock`, identity `~/.pilot/identity.json`) that registers with it. A second
 * daemon started with no `--registry` (`npx pilot-daemon --socket … --identity …`) joins the same network, since
 * a daemon's defaults are this rendezvous' addresses.
 *
 * Why one process rather than two children: one supervisor, one signal, one exit code, and an order of
 * shutdown that is right by construction. The rendezvous is acquired first, in the outer scope, and the daemon
 * starts only once the registry and the beacon listen (so it registers at once, rule 3). SIGTERM/SIGINT
 * interrupt the daemon first: it stops accepting, removes its socket file, joins its fibers and deregisters
 * while the registry still answers; only then do the beacon and the registry close and the store write its
 * final snapshot. Either side ending abnormally ends the whole (the rendezvous as `EssentialFiberFailed`, exit
 * 4; the daemon with its own error and exit code), after the other has been stopped.
 *
 * Flags are the two binaries' own (`pilot-rendezvous`, `pilot-daemon`), under the same names where they do not
 * clash: `--http` is the daemon's, the rendezvous' is `--registry-http`. `--config` files are not read here:
 * for a configured deployment run the two binaries.
 */
import { Effect, FileSystem, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as os from "node:os"
import * as nodePath from "node:path"
import { type DaemonSettings, runDaemon } from "../daemon/daemon.ts"
import { nodeFlags, resolveNodeSettings } from "../daemon/flags.ts"
import { COMMAND_LINE, ConfigError } from "../platform/config-file.ts"
import { localFileSystem } from "../platform/file-system.ts"
import { LOG_FORMATS, LOG_LEVELS, loggingLayer } from "../platform/logging.ts"
import { reportSettingsError, runServiceBinary, serviceBody } from "../platform/service.ts"
import { address, optionalAddress } from "../platform/settings.ts"
import { type RendezvousSettings, serveRendezvous } from "../rendezvous/rendezvous.ts"

const optionalString = (name: string, description: string) => Flag.String(name).pipe(Flag.withDescription(description), Flag.optional)

const flags = {
  registryAddr: optionalString("registry-addr", "registry TCP address (default :9000)"),
  beaconAddr: optionalString("beacon-addr", "beacon UDP address (default :9001)"),
  store: optionalString("store", "snapshot file of the registry's embedded store (default ~/.pilot/registry.json)"),
  registryHttp: optionalString("registry-http", "address for the rendezvous' /health, /ready and /metrics (default: off)"),
  ...nodeFlags,
  logLevel: Flag.Literals("log-level", LOG_LEVELS).pipe(Flag.withDescription("trace|debug|info|warn|error (default info)"), Flag.optional),
  logFormat: Flag.Literals("log-format", LOG_FORMATS).pipe(Flag.withDescription("text|json (default text)"), Flag.optional)
}

type FlagValues = { readonly [K in keyof typeof flags]: (typeof flags)[K] extends Flag.Flag<infer A> ? A : never }

const PILOT_HOME = nodePath.join(os.homedir(), ".pilot")

/** The rendezvous' settings and the daemon's, except what the daemon learns from the running rendezvous. */
interface Settings {
  readonly rendezvous: RendezvousSettings
  readonly daemon: Omit<DaemonSettings, "registry" | "beacon">
}

const resolveSettings = (given: FlagValues) =>
  Effect.gen(function*() {
    const source = COMMAND_LINE
    const settings: Settings = {
      rendezvous: {
        registryAddr: yield* address("registry-addr", Option.getOrElse(given.registryAddr, () => ":9000"), source),
        beaconAddr: yield* address("beacon-addr", Option.getOrElse(given.beaconAddr, () => ":9001"), source),
        store: Option.some(Option.getOrElse(given.store, () => nodePath.join(PILOT_HOME, "registry.json"))),
        redis: Option.none(),
        http: yield* optionalAddress("registry-http", given.registryHttp, source)
      },
      // The daemon's own flags, as `pilot-daemon` reads them (no config file here).
      daemon: yield* resolveNodeSettings(given, {}, source)
    }
    return settings
  })

const serve = (settings: Settings) =>
  Effect.scoped(Effect.gen(function*() {
    // The store would create a missing ~/.pilot with the default mode; the identity's directory is 0700.
    if (Option.isSome(settings.rendezvous.store)) {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory(nodePath.dirname(settings.rendezvous.store.value), { recursive: true, mode: 0o700 }).pipe(
        Effect.mapError((e) => new ConfigError({ source: "--store", detail: `cannot create the store's directory: ${e.message}` }))
      )
    }
    const rendezvous = yield* serveRendezvous(settings.rendezvous).pipe(Effect.annotateLogs("component", "rendezvous"))
    const daemon = runDaemon({
      ...settings.daemon,
      registry: rendezvous.registry,
      beacon: Option.some(rendezvous.beacon)
    }).pipe(Effect.annotateLogs("component", "daemon"))
    // Either ending ends both; on a signal the race is interrupted: the daemon stops (and deregisters) while the
    // registry, owned by the scope closed after this, still answers.
    return yield* Effect.raceFirst(daemon, rendezvous.failure)
  })).pipe(Effect.provide(localFileSystem))

const command = Command.make("pilot-quickstart", flags, (given) =>
  resolveSettings(given).pipe(
    Effect.tapError(reportSettingsError),
    Effect.flatMap((settings) =>
      serviceBody(
        "pilot-quickstart",
        serve(settings),
        loggingLayer({ level: Option.getOrElse(given.logLevel, () => "info"), format: Option.getOrElse(given.logFormat, () => "text") })
      ))
  )).pipe(Command.withDescription("pilotfish on one machine: a registry, a beacon and a daemon in one process (npm start)"))

// Bounded under this: the daemon's own shutdown (20 s at most), then the rendezvous' (registry drain, snapshot).
runServiceBinary(command, { shutdownDeadlineMs: 30_000 })

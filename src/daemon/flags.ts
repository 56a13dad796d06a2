/**
 * The flags of a node — what `pilot-daemon` and `npm start` (`src/quickstart/main.ts`) both run — and how they
 * become `DaemonSettings`: flag, then config file, then environment (`PILOT_SOCKET`), then default. Where the
 * registry and the beacon are is each binary's own business (the daemon's flags, or the rendezvous it runs).
 */
import { Config, Effect, Option } from "effect"
import { Flag } from "effect/cli"
import * as os from "node:os"
import * as nodePath from "node:path"
import { ConfigError, type ConfigValues, setting } from "../platform/config-file.ts"
import { address, optionalAddress } from "../platform/settings.ts"
import type { DaemonSettings } from "./daemon.ts"

export const nodeFlags = {
  relayOnly: Flag.Boolean("relay-only").pipe(Flag.withDescription("register as reachable through the beacon relay only"), Flag.optional),
  listen: Flag.String("listen").pipe(Flag.withDescription("UDP tunnel address (default :0)"), Flag.optional),
  socket: Flag.String("socket").pipe(Flag.withDescription("IPC socket path (env PILOT_SOCKET; default /tmp/pilot.sock)"), Flag.optional),
  endpoint: Flag.String("endpoint").pipe(
    Flag.withDescription("endpoint to register, skipping discovery (default: what the beacon sees, else :<UDP port> with the registry filling in our IP)"),
    Flag.optional
  ),
  identity: Flag.String("identity").pipe(
    Flag.withDescription("identity file; its directory holds trust.json, inbox/, received/ (default ~/.pilot/identity.json)"),
    Flag.optional
  ),
  public: Flag.Boolean("public").pipe(Flag.withDescription("make this node public: anyone may resolve its endpoint"), Flag.optional),
  hostname: Flag.String("hostname").pipe(Flag.withDescription("hostname to register"), Flag.optional),
  http: Flag.String("http").pipe(Flag.withDescription("address for the daemon's /health, /ready and /metrics (default: off)"), Flag.optional),
  webhook: Flag.String("webhook").pipe(Flag.withDescription("POST every daemon event as JSON to this URL"), Flag.optional),
  trustAutoApprove: Flag.Boolean("trust-auto-approve").pipe(Flag.withDescription("approve every trust request"), Flag.optional)
}

export type NodeFlagValues = { readonly [K in keyof typeof nodeFlags]: (typeof nodeFlags)[K] extends Flag.Flag<infer A> ? A : never }

/** `value`, else the environment variable, as an optional setting. */
export const orEnv = (value: Option.Option<string>, variable: string): Effect.Effect<Option.Option<string>, ConfigError> =>
  Option.isSome(value) ? Effect.succeed(value) : Config.option(Config.String(variable)).pipe(
    Effect.mapError((e) => new ConfigError({ source: `environment variable ${variable}`, detail: e.message }))
  )

/** A node's settings but the registry and the beacon; `config` is the config file's values (`{}`: none). */
export const resolveNodeSettings = (given: NodeFlagValues, config: ConfigValues, source: string) =>
  Effect.gen(function*() {
    const str = (name: string, flag: Option.Option<string>) => setting(name, "string", flag, config, source)
    const bool = (name: string, flag: Option.Option<boolean>) => setting(name, "boolean", flag, config, source)
    const node: Omit<DaemonSettings, "registry" | "beacon"> = {
      identityPath: Option.getOrElse(yield* str("identity", given.identity), () => nodePath.join(os.homedir(), ".pilot", "identity.json")),
      listen: yield* address("listen", Option.getOrElse(yield* str("listen", given.listen), () => ":0"), source),
      socketPath: Option.getOrElse(yield* orEnv(yield* str("socket", given.socket), "PILOT_SOCKET"), () => "/tmp/pilot.sock"),
      endpoint: yield* str("endpoint", given.endpoint),
      relayOnly: Option.getOrElse(yield* bool("relay-only", given.relayOnly), () => false),
      hostname: yield* str("hostname", given.hostname),
      http: yield* optionalAddress("http", yield* str("http", given.http), source),
      public: Option.getOrElse(yield* bool("public", given.public), () => false),
      trustAutoApprove: Option.getOrElse(yield* bool("trust-auto-approve", given.trustAutoApprove), () => false),
      webhook: yield* str("webhook", given.webhook)
    }
    return node
  })

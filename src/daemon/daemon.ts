/**
 * The daemon's composition root (DESIGN.md §3-§4): identity, the tunnel's UDP socket, the IPC server, the
 * registry session, then the data plane once registered, all supervised.
 *
 * Startup (rule 3: inbound reachability never waits on outbound work): load or create the identity → bind
 * the UDP socket → bind and serve the IPC socket (logged as "accepting"; systemd READY=1) → ask the beacon
 * which endpoint it sees (bounded; `--endpoint` skips it) → start the registry session in the background,
 * registering that endpoint or `:<bound UDP port>` (the registry fills in the IP it sees) → once the first
 * registration assigns our node ID, build the tunnel and transport on the ALREADY-BOUND socket
 * (`bindTunnelSocket`): the tunnel needs the node ID, the socket must not wait for it.
 *
 * Supervision (rule 5): the IPC server (accept loop and socket-file check), the registry publisher, the data
 * plane (which waits for the node ID, then its own loops) and the receive watchdog are essential; the first
 * to end abnormally ends the daemon with `EssentialFiberFailed` (exit code 4; the watchdog's restart request
 * keeps its own, 86).
 *
 * Shutdown (rule 4), by finalizer order: `daemon.shutting_down` is published and systemd told STOPPING=1 →
 * IPC stops accepting and its clients close → open connections are reset and the data plane's loops joined
 * (the trust store's final save with them) → the registry publisher is joined and the entry retracted
 * (bounded) → the UDP socket closes → the webhook drains and the event bus closes → the IPC socket file is
 * removed, last of all.
 *
 * IPC (`ipc-commands.ts`): `Health` and `Info` are answered from live state without touching the registry;
 * streams and datagrams go through the transport once the data plane runs; registry-backed commands use a
 * registry client of their own; Handshake sub-commands use the trust service, started with the data plane
 * (trust store `<identity dir>/trust.json`, handshake service on port 444).
 */
import { Clock, Effect, Exit, FiberSet, Option, Scope } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import * as nodePath from "node:path"
import { loadOrCreateIdentity } from "../crypto/identity.ts"
import { makeEventBus } from "../events/event-bus.ts"
import { makeWebhook } from "../events/webhook.ts"
import { makeIpcServer } from "../ipc/server.ts"
import { supervise } from "../lifecycle/supervisor.ts"
import { formatHostPort, type HostPort } from "../platform/host-port.ts"
import { serveOpsHttp } from "../platform/ops-http.ts"
import { makeSystemdNotifier } from "../platform/systemd-notify.ts"
import { VERSION } from "../platform/version.ts"
import { makeRegistryClient } from "../registry/client.ts"
import { resolveInetAddress } from "../net/resolve.ts"
import { NotifyKind } from "../protocol/beacon.ts"
import { discoverEndpoint } from "../tunnel/endpoint-discovery.ts"
import { bindTunnelSocket } from "../tunnel/tunnel.ts"
import { type DataPlane, makeDataPlane } from "./data-plane.ts"
import { makeIpcCommands } from "./ipc-commands.ts"
import { CommandFailure, makeIpcStreams } from "./ipc-streams.ts"
import { makeRegistryCommands } from "./registry-commands.ts"
import { makeTrustCommands, pendingCount, type RunningTrust, startTrust } from "./trust-commands.ts"
import { makeRegistryDirectory } from "./registry-directory.ts"
import { makeRegistrySession, type RegistrySession } from "./registry-session.ts"
import { daemonProbes, renderDaemonMetrics } from "./metrics.ts"
import { runRxWatchdog, type RxWatchdogState } from "./rx-watchdog.ts"
import { type DaemonSnapshot, healthJson, infoJson, uptimeSeconds } from "./status.ts"

export interface DaemonSettings {
  readonly identityPath: string
  /** UDP tunnel socket. */
  readonly listen: HostPort
  /** IPC socket file. */
  readonly socketPath: string
  readonly registry: { readonly host: string; readonly port: number }
  /**
   * The endpoint to register, skipping discovery (`--endpoint`: a fixed public address, a Kubernetes
   * service). Default: what the beacon sees (discovery), else `:<bound UDP port>` for the registry to fill in.
   */
  readonly endpoint: Option.Option<string>
  /** The beacon: endpoint discovery, hole punching and the relay. None: every frame goes direct. */
  readonly beacon: Option.Option<HostPort>
  /** Register as reachable through the relay only (`--relay-only`). */
  readonly relayOnly: boolean
  readonly hostname: Option.Option<string>
  /** Address of the /health, /ready and /metrics endpoint. */
  readonly http: Option.Option<HostPort>
  /** Make the node public once registered (`--public`). */
  readonly public: boolean
  /** Approve every trust request (`--trust-auto-approve`). */
  readonly trustAutoApprove: boolean
  /** POST every daemon event there (`--webhook URL`). */
  readonly webhook: Option.Option<string>
}

/** How long registration waits for the beacon to tell us our public endpoint. */
const DISCOVERY_TIMEOUT = "2 seconds"

/** Runs the daemon until an essential fiber fails or the caller is interrupted (a signal); never succeeds. */
export const runDaemon = (settings: DaemonSettings) =>
  Effect.scoped(Effect.gen(function*() {
    const startedMs = yield* Clock.currentTimeMillis
    const outer = yield* Scope.Scope
    // Forked first, so closed last: the IPC socket file goes after every other socket (DESIGN.md §4 rule 4).
    const lastOfAll = yield* Scope.fork(outer)
    let ownNodeId: number | undefined
    // The bus outlives everything that publishes to it (closed last); the webhook drains before it closes.
    const events = yield* makeEventBus
    const webhook = Option.isSome(settings.webhook)
      ? yield* makeWebhook({ url: settings.webhook.value, nodeId: () => ownNodeId ?? 0, bus: events })
      : undefined
    const identity = yield* loadOrCreateIdentity(settings.identityPath)
    // identity.json, trust.json, inbox/, received/ and watchdog.json live together.
    const dataDirectory = nodePath.dirname(settings.identityPath)
    const socket = yield* bindTunnelSocket(settings.listen)
    const udpPort = socket.address.port
    const beacon = Option.isSome(settings.beacon) ? yield* resolveInetAddress(settings.beacon.value) : undefined
    let endpoint = Option.getOrElse(settings.endpoint, () => `:${udpPort}`)
    let hostname = Option.getOrUndefined(settings.hostname)

    let accepting = false
    let plane: DataPlane | undefined
    let trust: RunningTrust | undefined
    // Forward reference: the dispatcher is served before the session exists (rule 3), and reads it lazily.
    const late: { session?: Pick<RegistrySession, "state" | "setHostname"> } = {}
    const snapshot = Effect.gen(function*() {
      const nowMs = yield* Clock.currentTimeMillis
      const session = late.session === undefined
        ? { registered: undefined, lastOkMillis: undefined, consecutiveFailures: 0, lastError: undefined }
        : yield* late.session.state
      const current = plane
      const trustState = trust === undefined ? undefined : yield* trust.store.state
      const s: DaemonSnapshot = {
        nowMs,
        startedMs,
        accepting,
        session,
        endpoint,
        hostname,
        version: VERSION,
        dataDirectory,
        trustPending: trustState === undefined ? 0 : pendingCount(trustState),
        webhook: webhook?.stats(),
        plane: current === undefined ? undefined : {
          tunnel: current.tunnel.stats(),
          transport: current.transport.stats(),
          connections: current.transport.connections()
        }
      }
      return s
    })

    // Commands that need the registry use a client of their own: never queued behind lookups or the session.
    const commandRegistry = yield* makeRegistryClient({ ...settings.registry, callTimeout: "5 seconds" })
    const registryCommands = makeRegistryCommands({
      registry: commandRegistry,
      identity,
      nodeId: () => ownNodeId,
      onHostnameSet: (name) => {
        hostname = name === "" ? undefined : name
        late.session?.setHostname(hostname)
      }
    })
    const dispatcher = makeIpcCommands({
      health: Effect.map(snapshot, healthJson),
      info: Effect.map(snapshot, infoJson),
      streams: makeIpcStreams(() => plane?.transport, outer),
      registry: registryCommands,
      handshake: makeTrustCommands(() => trust),
      preferDirect: (node) =>
        plane === undefined
          ? Effect.fail(new CommandFailure("not_running", "no tunnel yet: the daemon is not registered (see pilotctl health)"))
          : Effect.succeed({ ...plane.tunnel.preferDirect(node) })
    })
    // In a scope of its own, closed by the last finalizer added below, i.e. first at shutdown: stop accepting.
    const ipcScope = yield* Scope.fork(outer)
    const ipc = yield* makeIpcServer({ path: settings.socketPath, removeSocketFileIn: lastOfAll }, dispatcher).pipe(
      Scope.provide(ipcScope)
    )
    accepting = true
    const udpText = formatHostPort({ host: socket.address.address.toString(), port: udpPort })
    yield* Effect.logInfo("pilot-daemon accepting").pipe(Effect.annotateLogs({ udp: udpText, socket: ipc.path }))
    // systemd (Type=notify): ready once inbound works (rule 3: not waiting on the registry); no-op without NOTIFY_SOCKET.
    const notifier = makeSystemdNotifier()
    yield* notifier.ready(`accepting on ${udpText}; registering`)

    if (beacon !== undefined && Option.isNone(settings.endpoint)) {
      // Bounded, and after "accepting": the IPC socket already answers while we wait for the beacon.
      const seen = yield* discoverEndpoint(socket, { beacon, timeout: DISCOVERY_TIMEOUT })
      if (seen === undefined) {
        yield* Effect.logWarning("the beacon did not answer: registering our port for the registry to fill in the address it sees").pipe(
          Effect.annotateLogs({ beacon: NetAddress.formatInet(beacon), timeout: DISCOVERY_TIMEOUT })
        )
      } else {
        endpoint = seen
        yield* Effect.logInfo("public endpoint discovered").pipe(Effect.annotateLogs({ endpoint }))
      }
    }

    const session = yield* makeRegistrySession({
      registry: settings.registry,
      identity,
      listenAddr: endpoint,
      version: VERSION,
      relayOnly: settings.relayOnly,
      ...(hostname === undefined ? {} : { hostname })
    })
    late.session = session
    const lookups = yield* makeRegistryClient({ ...settings.registry, callTimeout: "5 seconds" })
    // Forked after the session, so the data plane stops (connections reset, loops joined) before the retract.
    const planeScope = yield* Scope.fork(outer)
    const planeFibers = yield* FiberSet.make().pipe(Scope.provide(planeScope))
    const runInPlane = yield* FiberSet.runtime(planeFibers)<never>()

    const dataPlane = Effect.gen(function*() {
      const nodeId = yield* session.nodeId
      ownNodeId = nodeId
      const directory = makeRegistryDirectory(lookups, identity, nodeId)
      const built = yield* makeDataPlane({
        identity,
        nodeId,
        bind: socket,
        registryKey: directory.registryKey,
        endpointOf: directory.endpointOf,
        beacon: {
          ...(beacon === undefined ? {} : { beacon }),
          isRelayOnly: directory.isRelayOnly,
          // A relayed trust handshake waits at the registry: poll now rather than at the next tick.
          onBeaconNotify: (kind) => {
            const running = trust
            if (kind === NotifyKind.RelayedHandshakeWaiting && running !== undefined) runInPlane(running.service.pollNow)
          }
        },
        services: { dataDirectory, events },
        onTunnelEvent: (event) => {
          const { name, peerNodeId, ...data } = event
          events.publishUnsafe(name, { peer_node_id: peerNodeId, ...data })
        }
      }).pipe(Scope.provide(planeScope))
      plane = built
      if (settings.public) {
        // Not fatal: a node that stays private still works for its trusted peers; the operator sees why.
        yield* registryCommands.setVisibility(true).pipe(
          Effect.tap(() => Effect.logInfo("node is public")),
          Effect.catch((e) => Effect.logWarning("could not make the node public", e.message))
        )
      }
      trust = yield* startTrust({
        policy: { trustedAgents: new Set(), autoApprove: settings.trustAutoApprove },
        directory: dataDirectory,
        identity,
        nodeId,
        transport: built.transport,
        registry: commandRegistry,
        registryKey: directory.registryKey,
        onEvent: ({ name, ...data }) => events.publish(name, data)
      }).pipe(Scope.provide(planeScope))
      yield* Effect.logInfo("data plane running").pipe(Effect.annotateLogs({ node_id: nodeId }))
      yield* notifier.status(`registered as node ${nodeId}; data plane running`)
      return yield* built.failure
    })

    let watchdogState: RxWatchdogState | undefined
    const rxWatchdog = runRxWatchdog({
      dataDirectory,
      sample: Effect.gen(function*() {
        const current = plane
        if (current === undefined) return undefined
        const state = yield* session.state
        const nowMs = yield* Clock.currentTimeMillis
        const tunnel = current.tunnel.stats()
        return {
          pktsRecv: tunnel.pkts_recv,
          pktsSent: tunnel.pkts_sent,
          consecutiveDialTimeouts: current.transport.stats().consecutiveDialTimeouts,
          uptimeMs: nowMs - startedMs,
          registryLastOkMs: state.lastOkMillis
        }
      }),
      // Soft recovery (reference §12): tell the beacon our endpoint again and register again at once.
      softRecover: Effect.suspend(() => {
        plane?.tunnel.rediscover()
        return session.reregister
      }),
      onState: (state) => void (watchdogState = state)
    })

    const probes = Effect.map(snapshot, daemonProbes)
    if (Option.isSome(settings.http)) {
      const bound = yield* serveOpsHttp(settings.http.value, {
        health: Effect.map(probes, (p) => p.health),
        ready: Effect.map(probes, (p) => p.ready),
        metrics: {
          render: Effect.gen(function*() {
            const s = yield* snapshot
            const monotonicNowMs = Number(yield* Clock.monotonicTimeNanos) / 1e6
            return renderDaemonMetrics({ snapshot: s, monotonicNowMs, ipc: yield* ipc.stats, ...(watchdogState === undefined ? {} : { watchdog: watchdogState }) })
          })
        }
      })
      const text = bound._tag === "UnixPathAddress" ? bound.path : formatHostPort({ host: bound.address.toString(), port: bound.port })
      yield* Effect.logInfo("health and metrics served").pipe(Effect.annotateLogs({ http: text }))
    }

    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        accepting = false
        return Scope.close(ipcScope, Exit.void)
      })
    )
    // Finalizers run last-added first: these two run before anything stops. Subscribers hear about the shutdown…
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(snapshot, (s) =>
        events.publish("daemon.shutting_down", {
          open_connections: s.plane?.transport.connections ?? 0,
          known_peers: s.plane?.tunnel.peers ?? 0,
          uptime_seconds: uptimeSeconds(s)
        }))
    )
    // …after systemd shows "deactivating" (bounded, 5 s).
    yield* Effect.addFinalizer(() => notifier.stopping("shutting down"))
    // Liveness pings when the unit sets WatchdogSec= (returns at once otherwise): only while /health would be ok.
    yield* Effect.forkScoped(notifier.watchdog(Effect.map(probes, (p) => p.health.ok)))
    return yield* supervise({ "ipc-server": ipc.failure, "registry-session": session.failure, "data-plane": dataPlane, "rx-watchdog": rxWatchdog })
  }))

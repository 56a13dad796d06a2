/**
 * The registry and a beacon served together in the caller's scope: what `pilot-rendezvous` runs, and what
 * `npm start` (`src/quickstart/main.ts`) runs next to a daemon. Settings are already resolved; the binaries own
 * flags, config files and logging.
 *
 * The beacon registers itself with the in-process registry over loopback, like any other beacon: its peers
 * (other beacons registered with the same registry) come from `beacon_list`. The registry sees that
 * registration from 127.0.0.1, so when the beacon's address names no host the beacon advertises
 * `127.0.0.1:<port>`; in a network with beacons on other hosts, give `PUBLIC_IP:9001` so the address the
 * registry hands out is reachable.
 *
 * `serveRendezvous` returns once both listen (rule 3: a daemon started after it registers at once); the store,
 * the registry's TCP server, the beacon's loops and the optional ops HTTP endpoint are released when the
 * caller's scope closes, in reverse order of acquisition (HTTP, beacon, registry, then the store's final
 * snapshot). `failure` is the supervised pair: it fails with the first of registry or beacon to die.
 */
import { Clock, Context, Effect, Layer, Option } from "effect"
import { beaconDetails, makeBeacon } from "../beacon/beacon.ts"
import { type EssentialFiberFailed, supervise } from "../lifecycle/supervisor.ts"
import { formatHostPort, type HostPort } from "../platform/host-port.ts"
import { serveOpsHttp } from "../platform/ops-http.ts"
import { makeRegistry } from "../registry/registry.ts"
import { RegistryStore } from "../registry/store.ts"
import { storeDescription, storeLayer } from "../registry/store-settings.ts"

export interface RendezvousSettings {
  readonly registryAddr: HostPort
  readonly beaconAddr: HostPort
  /** Snapshot file of the embedded store; none (and no Redis): memory only. */
  readonly store: Option.Option<string>
  readonly redis: Option.Option<string>
  /** Address of /health, /ready and /metrics. */
  readonly http: Option.Option<HostPort>
}

export interface RunningRendezvous {
  /** Where a process on this machine dials the registry and the beacon (a wildcard bind becomes loopback). */
  readonly registry: { readonly host: string; readonly port: number }
  readonly beacon: { readonly host: string; readonly port: number }
  /** Never succeeds; fails with the first of the registry's accept loop and the beacon's loops to end. */
  readonly failure: Effect.Effect<never, EssentialFiberFailed>
}

/** A host to dial a listener bound to `host` on this machine. */
export const dialHost = (host: string | undefined): string =>
  host === undefined || host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host

/** Serves the registry and the beacon in the caller's scope; returns once both listen. */
export const serveRendezvous = Effect.fnUntraced(function*(settings: RendezvousSettings) {
  const startedMs = yield* Clock.currentTimeMillis
  const storeContext = yield* Layer.build(storeLayer(settings))
  const store = Context.get(storeContext, RegistryStore)
  const registry = yield* makeRegistry({
    port: settings.registryAddr.port,
    ...(settings.registryAddr.host === undefined ? {} : { host: settings.registryAddr.host })
  }).pipe(Effect.provideContext(storeContext))
  if (registry.address._tag === "UnixPathAddress") return yield* Effect.die("registry is not on TCP")
  const registryPort = registry.address.port
  const registryBound = formatHostPort({ host: registry.address.address.toString(), port: registryPort })
  yield* Effect.logInfo("pilot-registry serving").pipe(Effect.annotateLogs({ addr: registryBound, store: storeDescription(settings) }))
  const registryDial = { host: dialHost(settings.registryAddr.host), port: registryPort }
  const beacon = yield* makeBeacon({
    bind: settings.beaconAddr,
    registry: registryDial,
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
  const running: RunningRendezvous = {
    registry: registryDial,
    beacon: { host: dialHost(settings.beaconAddr.host), port: beacon.address.port },
    failure: supervise({ "registry-tcp": registry.failure, beacon: beacon.failure })
  }
  return running
})

/**
 * The daemon's `/metrics` renderer and its `/health` / `/ready` verdicts, over hand-built snapshots: every line
 * of the output is valid Prometheus text exposition 0.0.4, no series repeats, counters end in `_total`, and the
 * values follow the snapshot.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { daemonProbes, type DaemonMetricsInput, renderDaemonMetrics } from "../../src/daemon/metrics.ts"
import { initialRxWatchdogState } from "../../src/daemon/rx-watchdog.ts"
import type { DaemonSnapshot } from "../../src/daemon/status.ts"
import type { TransportStats } from "../../src/transport/transport.ts"
import { makeBeaconCounters } from "../../src/tunnel/beacon-link.ts"
import { makeTunnelCounters, type TunnelStats } from "../../src/tunnel/tunnel-stats.ts"

const NAME = /^[a-z_:][a-z0-9_:]*$/
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (NaN|[+-]Inf|-?\d+(\.\d+)?(e[+-]?\d+)?)$/
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/

interface Parsed {
  readonly types: Map<string, string>
  /** `name{labels}` → value. */
  readonly series: Map<string, number>
}

/** A strict parser of the exposition format (the subset we emit: counters and gauges). */
const parseExposition = (text: string): Parsed => {
  assert.isTrue(text.endsWith("\n"), "ends with a newline")
  const types = new Map<string, string>()
  const helps = new Set<string>()
  const series = new Map<string, number>()
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("# HELP ")) {
      const [name] = line.slice(7).split(" ")
      assert.match(name!, NAME)
      assert.isFalse(helps.has(name!), `one HELP for ${name}`)
      helps.add(name!)
      continue
    }
    if (line.startsWith("# TYPE ")) {
      const [name, type, ...rest] = line.slice(7).split(" ")
      assert.match(name!, NAME)
      assert.deepStrictEqual(rest, [])
      assert.include(["counter", "gauge"], type)
      assert.isFalse(types.has(name!), `one TYPE for ${name}`)
      assert.isTrue(helps.has(name!), `HELP before TYPE for ${name}`)
      if (type === "counter") assert.isTrue(name!.endsWith("_total"), `counter ${name} ends in _total`)
      types.set(name!, type!)
      continue
    }
    const match = line.match(SAMPLE)
    assert.isNotNull(match, `a valid sample line: ${JSON.stringify(line)}`)
    const [, name, , labelText, value] = match!
    assert.match(name!, NAME)
    assert.isTrue(types.has(name!), `TYPE declared before the samples of ${name}`)
    let rest = labelText ?? ""
    const labelNames: Array<string> = []
    while (rest.length > 0) {
      const label = rest.match(LABEL)
      assert.isNotNull(label, `valid labels: ${labelText}`)
      labelNames.push(label![1]!)
      rest = rest.slice(label![0].length)
    }
    assert.strictEqual(new Set(labelNames).size, labelNames.length, "no repeated label")
    const key = `${name}{${labelText ?? ""}}`
    assert.isFalse(series.has(key), `no duplicate series ${key}`)
    series.set(key, Number(value))
  }
  return { types, series }
}

const transport = (n: number): TransportStats => ({
  connections: n,
  acceptQueueDrops: n + 1,
  connectionLimitDrops: n + 2,
  resetsSent: n + 3,
  failedConnections: n + 4,
  datagramsIn: n + 5,
  datagramsDropped: n + 6,
  consecutiveDialTimeouts: n + 7
})

const tunnelStats = (n: number, lastRecvMs: number | undefined): TunnelStats => {
  const c = makeTunnelCounters()
  c.pkts_sent = n
  c.pkts_recv = n + 1
  c.bytes_sent = n * 100
  c.bytes_recv = n * 90
  c.tunnel_encryption_failure = n + 7
  c.last_recv_ms = lastRecvMs
  c.drops.replay = n + 2
  c.drops.kx_rejected.bad_signature = 3
  return {
    ...c,
    drops: {
      ...c.drops,
      send: { rekey_cooldown: 1, pending_full: 2, pending_peers_full: 0, peer_table_full: 0, ...c.drops.send },
      fragments: { duplicate: 1, inconsistent: 0, expired: 4, evicted: 0 },
      pending_discarded: 5
    },
    peers: 2,
    encrypted_peers: 1,
    authenticated_peers: 1,
    handshake_pending_count: 1,
    table_full: { sessions: 0, peers: 0 },
    relay_peer_count: 1,
    beacon_addr: "",
    public_endpoint: "",
    beacon: { ...makeBeaconCounters(), relay_frames_sent: 6 },
    udp: { datagramsIn: 10, bytesIn: 1000, datagramsOut: 12, bytesOut: 1200, sendQueueDrops: 0, sendErrors: 0, receiveDrops: 0 },
    peer_list: []
  }
}

const connection = (retransmits: number) =>
  ({
    id: 1, local_port: 49152, remote_addr: { network: 0, node: 2 }, remote_port: 7,
    state: "ESTABLISHED", bytes_sent: 0, bytes_recv: 0, segs_sent: 0, segs_recv: 0, retransmits, fast_retx: 1, dup_acks: 0,
    sack_sent: 0, sack_recv: 0, cong_win: 0, ssthresh: 0, in_flight: 0, unacked: 2, ooo_buf: 0, peer_recv_win: 0, recv_win: 0,
    srtt_ms: 1, rttvar_ms: 1, in_recovery: false
  }) as const

const snapshot = (over: Partial<DaemonSnapshot> = {}): DaemonSnapshot => ({
  nowMs: 1_700_000_100_000,
  startedMs: 1_700_000_000_000,
  accepting: true,
  session: { registered: { nodeId: 42, address: "0:0000.0000.002A" }, lastOkMillis: 1_700_000_090_000, consecutiveFailures: 0, lastError: undefined },
  endpoint: "127.0.0.1:4000",
  hostname: "alpha",
  version: "1.2.3",
  dataDirectory: "/var/lib/pilot",
  trustPending: 2,
  plane: { tunnel: tunnelStats(50, 5_000), transport: transport(3), connections: [connection(4), connection(6)] },
  ...over
})

const value = (parsed: Parsed, series: string): number | undefined => parsed.series.get(series)

describe("daemon metrics", () => {
  it("renders valid exposition whose values follow a running daemon's snapshot", () => {
    const parsed = parseExposition(renderDaemonMetrics({
      snapshot: snapshot(),
      monotonicNowMs: 7_500,
      ipc: { clients: 1, clientsRefused: 0, requestsByCommand: { Health: 3, Info: 1 }, requestsInFlight: 0, requestFailures: 0, writeTimeouts: 0, badFrames: 2, sendQueueHighWater: 4 },
      watchdog: { ...initialRxWatchdogState([1, 2]), softRecoveriesTotal: 2, wedgedSinceMs: 5 }
    }))
    const expected: Record<string, number> = {
      "pilot_daemon_up{}": 1,
      "pilot_daemon_build_info{version=\"1.2.3\"}": 1,
      "pilot_daemon_uptime_seconds{}": 100,
      "pilot_daemon_start_time_seconds{}": 1_700_000_000,
      "pilot_daemon_accepting{}": 1,
      "pilot_daemon_registered{}": 1,
      "pilot_daemon_data_plane_running{}": 1,
      "pilot_daemon_registry_consecutive_failures{}": 0,
      "pilot_daemon_registry_last_success_age_seconds{}": 10,
      "pilot_daemon_last_receive_age_seconds{}": 2.5,
      "pilot_trust_pending_requests{}": 2,
      "pilot_tunnel_peers{}": 2,
      "pilot_tunnel_packets_sent_total{}": 50,
      "pilot_tunnel_packets_received_total{}": 51,
      "pilot_tunnel_bytes_sent_total{}": 5000,
      "pilot_tunnel_bytes_received_total{}": 4500,
      "pilot_tunnel_encryption_failures_total{}": 57,
      "pilot_tunnel_drops_total{reason=\"replay\"}": 52,
      "pilot_tunnel_drops_total{reason=\"unknown_magic\"}": 0,
      "pilot_tunnel_key_exchanges_rejected_total{reason=\"bad_signature\"}": 3,
      "pilot_tunnel_send_drops_total{reason=\"pending_full\"}": 2,
      "pilot_tunnel_fragment_drops_total{reason=\"expired\"}": 4,
      "pilot_tunnel_pending_discarded_total{}": 5,
      "pilot_tunnel_relay_peers{}": 1,
      "pilot_beacon_relay_frames_sent_total{}": 6,
      "pilot_udp_datagrams_received_total{}": 10,
      "pilot_transport_connections{}": 3,
      "pilot_transport_accept_queue_drops_total{}": 4,
      "pilot_transport_open_connection_retransmits{}": 10,
      "pilot_transport_open_connection_fast_retransmits{}": 2,
      "pilot_transport_unacked_segments{}": 4,
      "pilot_ipc_requests_total{command=\"Health\"}": 3,
      "pilot_ipc_bad_frames_total{}": 2,
      "pilot_rx_watchdog_wedged{}": 1,
      "pilot_rx_watchdog_soft_recoveries_total{}": 2,
      "pilot_rx_watchdog_recent_exits{}": 2
    }
    for (const [series, v] of Object.entries(expected)) expect([series, value(parsed, series)]).toEqual([series, v])
    for (const name of parsed.types.keys()) assert.isTrue(name.startsWith("pilot_"), name)
  })

  it("before registration: zero traffic, not registered, unknown ages left out", () => {
    const s = snapshot({
      session: { registered: undefined, lastOkMillis: undefined, consecutiveFailures: 4, lastError: "connect refused" },
      plane: undefined,
      trustPending: 0
    })
    const parsed = parseExposition(renderDaemonMetrics({ snapshot: s }))
    expect(value(parsed, "pilot_daemon_registered{}")).toBe(0)
    expect(value(parsed, "pilot_daemon_data_plane_running{}")).toBe(0)
    expect(value(parsed, "pilot_daemon_registry_consecutive_failures{}")).toBe(4)
    expect(value(parsed, "pilot_tunnel_packets_sent_total{}")).toBe(0)
    expect(value(parsed, "pilot_daemon_last_receive_age_seconds{}")).toBeUndefined()
    expect(value(parsed, "pilot_daemon_registry_last_success_age_seconds{}")).toBeUndefined()
    // The families are still declared, so dashboards see the metric exists.
    assert.isTrue(parsed.types.has("pilot_daemon_last_receive_age_seconds"))
    assert.isFalse(parsed.types.has("pilot_ipc_clients"), "IPC figures only when given")
  })

  it("escapes label values (backslash, quote, newline)", () => {
    const text = renderDaemonMetrics({ snapshot: snapshot({ version: "1.0 \"beta\"\\x\nnext" }) })
    expect(text).toContain("pilot_daemon_build_info{version=\"1.0 \\\"beta\\\"\\\\x\\nnext\"} 1\n")
    parseExposition(text)
  })

  it("property: any snapshot renders valid exposition and the same set of series", () => {
    const count = fc.nat({ max: 2 ** 40 })
    fc.assert(fc.property(
      fc.record({
        accepting: fc.boolean(),
        registered: fc.boolean(),
        plane: fc.boolean(),
        n: count,
        failures: fc.nat({ max: 1000 }),
        version: fc.string(),
        commands: fc.dictionary(fc.string({ minLength: 1 }), count),
        lastRecv: fc.option(count, { nil: undefined })
      }),
      (r) => {
        const input: DaemonMetricsInput = {
          snapshot: snapshot({
            accepting: r.accepting,
            version: r.version,
            session: { registered: r.registered ? { nodeId: 1, address: "x" } : undefined, lastOkMillis: undefined, consecutiveFailures: r.failures, lastError: undefined },
            plane: r.plane ? { tunnel: tunnelStats(r.n, r.lastRecv), transport: transport(r.n), connections: [] } : undefined
          }),
          monotonicNowMs: 2 ** 41,
          ipc: { clients: 0, clientsRefused: 0, requestsByCommand: r.commands, requestsInFlight: 0, requestFailures: 0, writeTimeouts: 0, badFrames: 0, sendQueueHighWater: 0 }
        }
        const parsed = parseExposition(renderDaemonMetrics(input))
        expect(value(parsed, "pilot_daemon_accepting{}")).toBe(r.accepting ? 1 : 0)
        expect(value(parsed, "pilot_tunnel_packets_sent_total{}")).toBe(r.plane ? r.n : 0)
        expect(value(parsed, "pilot_ipc_requests_total{}")).toBeUndefined()
        expect([...parsed.series.keys()].filter((k) => k.startsWith("pilot_ipc_requests_total")).length).toBe(Object.keys(r.commands).length)
      }
    ))
  })
})

describe("daemon probes", () => {
  it("health is liveness (accepting); ready also needs the registration and the data plane", () => {
    const running = daemonProbes(snapshot())
    expect([running.health.ok, running.ready.ok]).toEqual([true, true])
    expect(running.ready.details["failing"]).toBeUndefined()

    const unregistered = daemonProbes(snapshot({ session: { registered: undefined, lastOkMillis: undefined, consecutiveFailures: 2, lastError: "x" }, plane: undefined }))
    expect([unregistered.health.ok, unregistered.ready.ok]).toEqual([true, false])
    expect(unregistered.ready.details["failing"]).toEqual(["not_registered", "data_plane_not_running"])

    const registeredNoPlane = daemonProbes(snapshot({ plane: undefined }))
    expect([registeredNoPlane.health.ok, registeredNoPlane.ready.ok]).toEqual([true, false])

    const stopping = daemonProbes(snapshot({ accepting: false }))
    expect([stopping.health.ok, stopping.ready.ok]).toEqual([false, false])
    expect(stopping.health.details["failing"]).toEqual(["not_accepting"])
  })

  it("property: ready implies healthy; healthy iff accepting", () => {
    fc.assert(fc.property(fc.boolean(), fc.boolean(), fc.boolean(), (accepting, registered, plane) => {
      const probes = daemonProbes(snapshot({
        accepting,
        session: { registered: registered ? { nodeId: 1, address: "x" } : undefined, lastOkMillis: undefined, consecutiveFailures: 0, lastError: undefined },
        ...(plane ? {} : { plane: undefined })
      }))
      expect(probes.health.ok).toBe(accepting)
      expect(probes.ready.ok).toBe(accepting && registered && plane)
    }))
  })
})

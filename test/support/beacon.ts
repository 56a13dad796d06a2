/**
 * An in-process beacon on a loopback port, and a UDP client that speaks beacon messages, for tests.
 *
 *   const beacon = yield* startBeacon({ registry: { host: "127.0.0.1", port } })
 *   const node = yield* beaconClient()
 *   node.send({ _tag: "Discover", node: 7 }, beacon.address)
 *   const reply = yield* node.next            // a decoded BeaconMessage with its source
 *
 * Both live in the current scope: the beacon's loops and both sockets stop when it closes. Prometheus series are
 * off by default (several beacons in one process would replace each other's series); the stats snapshot is the
 * source of truth in tests.
 */
import { type Duration, Effect, Queue, Result, type Scope } from "effect"
import type * as NetAddress from "effect/net/NetAddress"
import { type Beacon, type BeaconBindError, type BeaconOptions, makeBeacon } from "../../src/beacon/beacon.ts"
import { supervise } from "../../src/lifecycle/supervisor.ts"
import { makeUdpEndpoint } from "../../src/net/udp-endpoint.ts"
import { type BeaconMessage, decodeBeaconMessage, encodeBeaconMessage } from "../../src/protocol/beacon.ts"

/** Fast intervals so tests see gossip and registry refreshes in well under a second. */
export const FAST_INTERVALS = {
  registerInterval: "200 millis",
  listInterval: "200 millis",
  gossipInterval: "100 millis",
  sweepInterval: "100 millis",
  backoff: { base: "50 millis", cap: "500 millis" }
} as const

export const startBeacon = (options: Partial<BeaconOptions> = {}): Effect.Effect<Beacon, BeaconBindError, Scope.Scope> =>
  makeBeacon({ bind: { host: "127.0.0.1", port: 0 }, metrics: false, ...FAST_INTERVALS, ...options })

export interface ReceivedMessage {
  readonly message: BeaconMessage
  readonly from: NetAddress.InetAddress
}

export interface BeaconClient {
  readonly address: NetAddress.InetAddress
  readonly send: (message: BeaconMessage, to: NetAddress.InetAddress) => void
  readonly sendRaw: (bytes: Uint8Array, to: NetAddress.InetAddress) => void
  /** The next decoded message (undecodable datagrams are skipped), or a failure after `timeout` (default 5 s). */
  readonly next: (timeout?: Duration.Input) => Effect.Effect<ReceivedMessage, Error>
  /** Whether a message is already waiting (to prove that nothing arrived, after a later message did). */
  readonly pending: () => number
}

/** A UDP socket on 127.0.0.1 playing a node (or a foreign beacon). */
export const beaconClient = () =>
  Effect.gen(function*() {
    const inbox = yield* Queue.unbounded<ReceivedMessage>()
    const udp = yield* makeUdpEndpoint({ bind: { host: "127.0.0.1", port: 0 } }, (datagram) => {
      const decoded = decodeBeaconMessage(datagram.payload.slice())
      if (Result.isSuccess(decoded)) Queue.offerUnsafe(inbox, { message: decoded.success, from: datagram.from })
    })
    yield* Effect.forkScoped(supervise({ reader: udp.reader, writer: udp.writer }))
    const client: BeaconClient = {
      address: udp.address,
      send: (message, to) => {
        udp.send(encodeBeaconMessage(message), to)
      },
      sendRaw: (bytes, to) => {
        udp.send(bytes, to)
      },
      next: (timeout = "5 seconds") =>
        Queue.take(inbox).pipe(Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail(new Error(`no beacon message within ${String(timeout)}`)) })),
      pending: () => Queue.sizeUnsafe(inbox)
    }
    return client
  })

/** Polls `check` every 10 ms until it holds, failing after `timeout` (default 5 s) with `what`. */
export const eventually = (what: string, check: () => boolean, timeout: Duration.Input = "5 seconds") =>
  Effect.gen(function*() {
    while (!check()) yield* Effect.sleep("10 millis")
  }).pipe(Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail(new Error(`timed out waiting for ${what}`)) }))

/**
 * `count` distinct UDP ports that were free a moment ago (bound at port 0, then released), for beacons that must
 * list each other as static peers before either exists. Another process could take one in between; on loopback
 * in a test run that has not been seen, and a clash would fail loudly at bind.
 */
export const freeUdpPorts = (count: number) =>
  Effect.scoped(Effect.gen(function*() {
    const ports: Array<number> = []
    for (let i = 0; i < count; i++) {
      const udp = yield* makeUdpEndpoint({ bind: { host: "127.0.0.1", port: 0 } }, () => {})
      ports.push(udp.address.port)
    }
    return ports
  }))

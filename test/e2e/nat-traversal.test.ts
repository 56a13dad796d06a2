/**
 * NAT traversal end to end, on real NATs: network namespaces with Linux masquerading (test/support/netns.ts),
 * a rendezvous (registry + beacon) on the "public" network, and two `pilot-daemon` processes, each behind its
 * own NAT, driven by `pilotctl` through their IPC sockets.
 *
 * - Both NATs punchable: the daemons discover their public endpoints through the beacon, punch, and talk
 *   directly; `peers` says `relay: false` on both sides; `prefer-direct` resets the path and traffic goes on.
 * - UDP between the NATs blocked: the key exchange falls back to the relay after one unanswered attempt, a
 *   message and a 1 MB echo transfer succeed, `peers` says `relay: true`; once the block is lifted the
 *   probes find the direct path and both sides leave the relay.
 * - Two beacons: each daemon announces itself to a different beacon; the beacons learn each other through
 *   the registry and gossip, and the relay crosses from one to the other.
 *
 * Needs root and network namespaces (CI runs as root and `.ci/run` installs iproute2 and nftables).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule, type Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { type RunningBinary, startBinary } from "../support/child-process.ts"
import { startDaemon } from "../support/daemon-child.ts"
import { type Internet, makeInternet, NAT1_WAN_IP, NAT2_WAN_IP, netnsAvailable, PUBLIC_IP } from "../support/netns.ts"
import { ctl, okData, tempDir } from "../pilotctl/ctl-kit.ts"

const REGISTRY = `${PUBLIC_IP}:9000`
const BEACON = `${PUBLIC_IP}:9001`
const SECOND_BEACON = `${PUBLIC_IP}:9002`

interface PeerEntry {
  readonly node_id: number
  readonly endpoint?: string
  readonly relay: boolean
  readonly encrypted: boolean
}

const startRendezvous = (netns: string) =>
  Effect.gen(function*() {
    const proc = yield* startBinary("src/rendezvous/main.ts", ["--registry-addr", `${PUBLIC_IP}:9000`, "--beacon-addr", `${PUBLIC_IP}:9001`], {}, { netns })
    yield* proc.waitForLine(/pilot-rendezvous serving/, "30 seconds")
    return proc
  })

type NattedDaemon = Effect.Success<ReturnType<typeof startNattedDaemon>>

/** A public daemon behind a NAT: the binary's default `--listen`, ready once it says it is public. */
const startNattedDaemon = (netns: string, dir: string, name: string, beacon: string) =>
  Effect.gen(function*() {
    const daemon = yield* startDaemon({ home: path.join(dir, name), registry: REGISTRY, beacon, hostname: name, listen: false, args: ["--public"], netns })
    yield* daemon.proc.waitForLine(/node is public/, "15 seconds")
    return daemon
  })

const peerOf = (socket: string, nodeId: number) =>
  Effect.map(ctl("peers", "--json", "--socket", socket), (run) => {
    const peers = okData(run)["peers"] as ReadonlyArray<PeerEntry>
    return peers.find((p) => p.node_id === nodeId)
  })

/** Polls `peers` until the entry for `nodeId` satisfies `until` (bounded): path changes are asynchronous. */
const awaitPeer = (socket: string, nodeId: number, until: (peer: PeerEntry) => boolean, what: string) =>
  peerOf(socket, nodeId).pipe(
    Effect.repeat({ until: (peer) => peer !== undefined && until(peer), schedule: Schedule.spaced("250 millis"), times: 240 }),
    Effect.flatMap((peer) =>
      peer !== undefined && until(peer) ? Effect.succeed(peer) : Effect.fail(new Error(`peer ${nodeId}: ${what} never happened (last: ${JSON.stringify(peer)})`))
    )
  )

const echo = (socket: string, target: number, message: string) =>
  Effect.map(ctl("connect", String(target), "7", "--message", message, "--json", "--socket", socket), okData)

/** Every process stops on SIGTERM with exit code 0 and removes its IPC socket. */
const stopAll = (daemons: ReadonlyArray<{ readonly socket: string; readonly proc: { readonly stop: (s?: NodeJS.Signals) => Effect.Effect<number | null, Error> } }>) =>
  Effect.forEach(daemons, (d) =>
    Effect.gen(function*() {
      assert.strictEqual(yield* d.proc.stop("SIGTERM"), 0)
      assert.isFalse(fs.existsSync(d.socket), `${d.socket} removed`)
    }))

/**
 * The scene every test plays in: a rendezvous on the public network, then `prepare` (its result is `prepared`),
 * then alpha behind NAT 1 on the first beacon and bravo behind NAT 2 on `bravoBeacon`.
 */
const natScene = <A = void>(
  options: { readonly bravoBeacon?: string; readonly prepare?: (net: Internet) => Effect.Effect<A, Error, Scope.Scope> } = {}
) =>
  Effect.gen(function*() {
    const net = yield* makeInternet
    const dir = yield* tempDir
    const rendezvous = yield* startRendezvous(net.pub)
    const prepared = options.prepare === undefined ? undefined : yield* options.prepare(net)
    const a = yield* startNattedDaemon(net.h1, dir, "alpha", BEACON)
    const b = yield* startNattedDaemon(net.h2, dir, "bravo", options.bravoBeacon ?? BEACON)
    return { net, rendezvous, a, b, prepared }
  })

/** Stops the daemons (stopAll), then `others`, then the rendezvous, each with exit code 0. */
const stopScene = (
  scene: { readonly rendezvous: RunningBinary; readonly a: NattedDaemon; readonly b: NattedDaemon },
  others: ReadonlyArray<{ readonly stop: (s?: NodeJS.Signals) => Effect.Effect<number | null, Error> }> = []
) =>
  Effect.gen(function*() {
    yield* stopAll([scene.a, scene.b])
    for (const other of others) assert.strictEqual(yield* other.stop("SIGTERM"), 0)
    assert.strictEqual(yield* scene.rendezvous.stop("SIGTERM"), 0)
  })

describe.skipIf(!netnsAvailable())("NAT traversal in network namespaces (skipped without root and ip netns)", () => {
  it.live("endpoint-independent NATs on both sides: the daemons punch through and talk directly", () =>
    Effect.gen(function*() {
      const scene = yield* natScene()
      const { a, b } = scene

      // Discovery: each registered the endpoint its NAT gives it, not its private address.
      const infoA = okData(yield* ctl("info", "--json", "--socket", a.socket))
      assert.match(String(infoA["endpoint"]), new RegExp(`^${NAT1_WAN_IP.replaceAll(".", "\\.")}:\\d+$`))
      assert.strictEqual(infoA["beacon_addr"], BEACON)

      const reply = yield* echo(a.socket, b.nodeId, "hello through the NAT")
      assert.strictEqual(reply["response"], "hello through the NAT")
      const towardB = yield* awaitPeer(a.socket, b.nodeId, (p) => p.encrypted, "a session")
      assert.isFalse(towardB.relay, "alpha reaches bravo directly")
      assert.match(String(towardB.endpoint), new RegExp(`^${NAT2_WAN_IP.replaceAll(".", "\\.")}:`))
      const towardA = yield* awaitPeer(b.socket, a.nodeId, (p) => p.encrypted, "a session")
      assert.isFalse(towardA.relay, "bravo reaches alpha directly")

      // prefer-direct resets the path (resolve, punch, key exchange again) without dropping the session.
      const reset = okData(yield* ctl("prefer-direct", String(b.nodeId), "--json", "--socket", a.socket))
      assert.deepStrictEqual(reset, { node_id: b.nodeId, had_tunnel: true, was_relay_active: false, was_relay_pinned: false, pila_pushed: true })
      assert.strictEqual((yield* echo(a.socket, b.nodeId, "after the reset"))["response"], "after the reset")

      yield* stopScene(scene)
    }), 120_000)

  it.live("UDP between the NATs blocked: relay fallback carries a message and 1 MB; lifting the block brings the direct path back", () =>
    Effect.gen(function*() {
      const scene = yield* natScene()
      const { a, b, net } = scene
      yield* net.blockDirect

      const reply = yield* echo(a.socket, b.nodeId, "hello through the relay")
      assert.strictEqual(reply["response"], "hello through the relay")
      assert.isTrue((yield* awaitPeer(a.socket, b.nodeId, (p) => p.encrypted, "a session")).relay, "alpha relays to bravo")
      assert.isTrue((yield* awaitPeer(b.socket, a.nodeId, (p) => p.encrypted, "a session")).relay, "bravo relays to alpha")
      const bench = okData(yield* ctl("bench", String(b.nodeId), "1", "--json", "--socket", a.socket))
      assert.strictEqual(bench["bytes"], 1024 * 1024)

      yield* net.unblockDirect
      yield* awaitPeer(a.socket, b.nodeId, (p) => !p.relay, "the upgrade to direct")
      yield* awaitPeer(b.socket, a.nodeId, (p) => !p.relay, "the upgrade to direct")
      const after = yield* echo(a.socket, b.nodeId, "direct again")
      assert.strictEqual(after["response"], "direct again")

      yield* stopScene(scene)
    }), 180_000)

  it.live("two beacons: daemons attached to different beacons reach each other through gossip", () =>
    Effect.gen(function*() {
      const scene = yield* natScene({
        bravoBeacon: SECOND_BEACON,
        prepare: (net) =>
          Effect.gen(function*() {
            const second = yield* startBinary("src/beacon/main.ts", ["--addr", SECOND_BEACON, "--registry", REGISTRY], {}, { netns: net.pub })
            yield* second.waitForLine(/registered with the registry/, "30 seconds")
            yield* second.waitForLine(/peer beacon heard/, "30 seconds")
            yield* net.blockDirect
            return second
          })
      })
      const { a, b } = scene

      const reply = yield* echo(a.socket, b.nodeId, "across two beacons")
      assert.strictEqual(reply["response"], "across two beacons")
      assert.isTrue((yield* awaitPeer(a.socket, b.nodeId, (p) => p.encrypted, "a session")).relay)

      yield* stopScene(scene, scene.prepared === undefined ? [] : [scene.prepared])
    }), 120_000)
})

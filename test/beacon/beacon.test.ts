/**
 * The beacon shell on real UDP sockets on 127.0.0.1: discovery, punch coordination, local relay, relay between
 * two beacons that learn of each other through a real in-process registry (beacon_list) or through static peers,
 * per-source limits, and a storm of random datagrams. Every test runs under expectNoLeaks: when its scope closes,
 * no fiber and no socket of the beacons, clients or registry is left.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import fc from "fast-check"
import type { Beacon } from "../../src/beacon/beacon.ts"
import { beaconClient, eventually, freeUdpPorts, startBeacon } from "../support/beacon.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { startRegistry } from "../support/registry.ts"

const FRAME = new Uint8Array([0x50, 0x49, 0x4c, 0x53, 9, 8, 7, 6])
const peerText = (b: Beacon) => `127.0.0.1:${b.address.port}`

/** Registers `node` from `client` at `beacon` and waits for the reply. */
const attach = (client: Effect.Success<ReturnType<typeof beaconClient>>, node: number, beacon: Beacon) =>
  Effect.gen(function*() {
    client.send({ _tag: "Discover", node }, beacon.address)
    const reply = yield* client.next()
    assert.strictEqual(reply.message._tag, "DiscoverReply")
  })

describe("beacon on loopback", () => {
  it.live("Discover is answered with the endpoint the beacon observed", () =>
    expectNoLeaks(Effect.gen(function*() {
      const beacon = yield* startBeacon()
      const node = yield* beaconClient()
      node.send({ _tag: "Discover", node: 42 }, beacon.address)
      const reply = yield* node.next()
      assert.deepStrictEqual(reply.message, { _tag: "DiscoverReply", endpoint: { ip: "127.0.0.1", port: node.address.port } })
      assert.strictEqual(NetAddress.formatInet(reply.from), NetAddress.formatInet(beacon.address))
      node.send({ _tag: "Discover", node: 0 }, beacon.address)
      yield* node.next()
      assert.deepStrictEqual({ nodes: beacon.stats().nodes, discover: beacon.stats().messages.discover }, { nodes: 1, discover: 2 })
    })))

  it.live("a PunchRequest makes the beacon send each side the other's endpoint", () =>
    expectNoLeaks(Effect.gen(function*() {
      const beacon = yield* startBeacon()
      const a = yield* beaconClient()
      const b = yield* beaconClient()
      yield* attach(b, 2, beacon)
      a.send({ _tag: "PunchRequest", requester: 1, target: 2 }, beacon.address)
      assert.deepStrictEqual((yield* a.next()).message, { _tag: "PunchCommand", endpoint: { ip: "127.0.0.1", port: b.address.port } })
      assert.deepStrictEqual((yield* b.next()).message, { _tag: "PunchCommand", endpoint: { ip: "127.0.0.1", port: a.address.port } })
      assert.strictEqual(beacon.stats().punchCommands, 2)
    })))

  it.live("a relay reaches a local node as RelayDeliver; one for an unknown node is counted and not delivered", () =>
    expectNoLeaks(Effect.gen(function*() {
      const beacon = yield* startBeacon()
      const a = yield* beaconClient()
      const b = yield* beaconClient()
      yield* attach(a, 1, beacon)
      yield* attach(b, 2, beacon)
      a.send({ _tag: "Relay", sender: 1, dest: 77, frame: FRAME }, beacon.address)
      a.send({ _tag: "Relay", sender: 1, dest: 2, frame: FRAME }, beacon.address)
      assert.deepStrictEqual((yield* b.next()).message, { _tag: "RelayDeliver", sender: 1, frame: FRAME })
      assert.strictEqual(a.pending(), 0)
      const stats = beacon.stats()
      assert.deepStrictEqual({ delivered: stats.relayDelivered, notFound: stats.relayDropped.not_found }, { delivered: 1, notFound: 1 })
    })))

  const twoBeaconRelay = (b1: Beacon, b2: Beacon) =>
    Effect.gen(function*() {
      const a = yield* beaconClient()
      const b = yield* beaconClient()
      yield* attach(a, 1, b1)
      yield* attach(b, 2, b2)
      yield* eventually("beacon 1 to learn that beacon 2 owns node 2", () => b1.stats().ownedByPeers >= 1)
      a.send({ _tag: "Relay", sender: 1, dest: 2, frame: FRAME }, b1.address)
      const got = yield* b.next()
      assert.deepStrictEqual(got.message, { _tag: "RelayDeliver", sender: 1, frame: FRAME })
      assert.strictEqual(NetAddress.formatInet(got.from), NetAddress.formatInet(b2.address))
      assert.strictEqual(b1.stats().relayForwarded, 1)
      assert.strictEqual(b2.stats().relayDelivered, 1)
      return { a, b }
    })

  it.live("two beacons found through static --peers: a relay from A via beacon 1 reaches B as RelayDeliver from beacon 2", () =>
    expectNoLeaks(Effect.gen(function*() {
      const [p1, p2] = (yield* freeUdpPorts(2)) as [number, number]
      const b1 = yield* startBeacon({ beaconId: 1, bind: { host: "127.0.0.1", port: p1 }, peers: [`127.0.0.1:${p2}`] })
      const b2 = yield* startBeacon({ beaconId: 2, bind: { host: "127.0.0.1", port: p2 }, peers: [`127.0.0.1:${p1}`, peerText(b1)] })
      yield* eventually("the static peers to be installed", () => b1.peers().length === 1 && b2.peers().length === 1)
      assert.deepStrictEqual(b2.peers(), [`127.0.0.1|${p1}`]) // listed twice, held once
      yield* twoBeaconRelay(b1, b2)
      // Gossip counts the other way too: B's answer travels back through beacon 2 and beacon 1.
      yield* eventually("beacon 2 to learn that beacon 1 owns node 1", () => b2.stats().ownedByPeers >= 1)
    })))

  it.live("two beacons found through a real registry's beacon_list relay between their nodes", () =>
    expectNoLeaks(Effect.gen(function*() {
      const registry = yield* startRegistry()
      const reg = { host: "127.0.0.1", port: registry.port }
      const b1 = yield* startBeacon({ beaconId: 11, registry: reg })
      const b2 = yield* startBeacon({ beaconId: 12, registry: reg })
      yield* eventually("both beacons registered and listing each other", () =>
        b1.registration().registered && b2.registration().registered && b1.stats().peers === 1 && b2.stats().peers === 1)
      const client = yield* registry.client()
      const listed = yield* client.call({ type: "beacon_list" })
      assert.sameMembers((listed["beacons"] as Array<{ id: number }>).map((b) => b.id), [11, 12])
      yield* twoBeaconRelay(b1, b2)
      assert.deepStrictEqual(b1.peers(), [`127.0.0.1|${b2.address.port}`])
    })))

  it.live("a relay arriving from a peer beacon is delivered locally or dropped, never forwarded again", () =>
    expectNoLeaks(Effect.gen(function*() {
      // The "peer beacon" is a test socket listed in --peers, so it can send relays as beacon traffic.
      const foreign = yield* beaconClient()
      const [pBeacon, pOther] = (yield* freeUdpPorts(2)) as [number, number]
      const beacon = yield* startBeacon({ bind: { host: "127.0.0.1", port: pBeacon }, peers: [`127.0.0.1:${foreign.address.port}`, `127.0.0.1:${pOther}`] })
      const other = yield* startBeacon({ bind: { host: "127.0.0.1", port: pOther }, peers: [peerText(beacon)] })
      yield* eventually("the beacon to hear the other's gossip", () => beacon.stats().syncsReceived > 0)
      const node = yield* beaconClient()
      yield* attach(node, 5, other)
      yield* eventually("the beacon to learn that the other beacon owns node 5", () => beacon.stats().ownedByPeers >= 1)
      foreign.send({ _tag: "Relay", sender: 9, dest: 5, frame: FRAME }, beacon.address)
      yield* eventually("the foreign relay to be dropped", () => beacon.stats().relayDropped.peer_not_local === 1)
      assert.strictEqual(beacon.stats().relayForwarded, 0)
      assert.strictEqual(node.pending(), 0)
      // From a node (not a peer) the same relay is forwarded and delivered.
      const sender = yield* beaconClient()
      yield* attach(sender, 9, beacon)
      sender.send({ _tag: "Relay", sender: 9, dest: 5, frame: FRAME }, beacon.address)
      assert.deepStrictEqual((yield* node.next()).message, { _tag: "RelayDeliver", sender: 9, frame: FRAME })
      assert.strictEqual(beacon.stats().relayForwarded, 1)
    })))

  it.live("a beacon with an unreachable registry serves at once and reports itself unregistered", () =>
    expectNoLeaks(Effect.gen(function*() {
      const beacon = yield* startBeacon({ registry: { host: "127.0.0.1", port: 1, callTimeout: "500 millis" } })
      const node = yield* beaconClient()
      yield* attach(node, 3, beacon)
      yield* eventually("a failed registration attempt", () => beacon.registration().consecutiveFailures > 0)
      assert.isFalse(beacon.registration().registered)
    })))

  it.live("per-source limits: punch requests past the burst are dropped and counted", () =>
    expectNoLeaks(Effect.gen(function*() {
      const beacon = yield* startBeacon({ core: { punchLimit: { burst: 2, perSecond: 0.01 }, relayLimit: { burst: 3, perSecond: 0.01 } } })
      const a = yield* beaconClient()
      const b = yield* beaconClient()
      yield* attach(b, 2, beacon)
      for (let i = 0; i < 4; i++) a.send({ _tag: "PunchRequest", requester: 1, target: 2 }, beacon.address)
      for (let i = 0; i < 5; i++) a.send({ _tag: "Relay", sender: 1, dest: 2, frame: FRAME }, beacon.address)
      yield* eventually("every datagram to be handled", () => beacon.stats().udp.datagramsIn >= 10)
      const stats = beacon.stats()
      assert.deepStrictEqual(
        { punches: stats.punchCommands, punchLimited: stats.drops.punch_rate_limited, relayed: stats.relayDelivered, relayLimited: stats.relayDropped.rate_limited },
        { punches: 4, punchLimited: 2, relayed: 3, relayLimited: 2 }
      )
    })))

  it.live("thousands of random datagrams are counted and dropped, and a good client is still served", () =>
    expectNoLeaks(Effect.gen(function*() {
      const beacon = yield* startBeacon({ core: { maxNodes: 64, relayLimit: { burst: 1e6, perSecond: 1e6 }, discoverLimit: { burst: 1e6, perSecond: 1e6 } } })
      const attacker = yield* beaconClient()
      const samples = fc.sample(fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 1400 }),
        fc.record({ type: fc.integer({ min: 0, max: 15 }), body: fc.uint8Array({ maxLength: 64 }) }).map(({ type, body }) => new Uint8Array([type, ...body]))
      ), { numRuns: 3000, seed: 7 })
      for (const bytes of samples) attacker.sendRaw(bytes, beacon.address)
      yield* eventually("every random datagram to be handled", () => beacon.stats().udp.datagramsIn + beacon.stats().udp.receiveDrops >= samples.length, "20 seconds")
      const good = yield* beaconClient()
      good.send({ _tag: "Discover", node: 123_456 }, beacon.address)
      const reply = yield* good.next()
      assert.deepStrictEqual(reply.message, { _tag: "DiscoverReply", endpoint: { ip: "127.0.0.1", port: good.address.port } })
      const stats = beacon.stats()
      const dropped = Object.values(stats.drops).reduce((x, y) => x + y, 0)
      const handled = Object.values(stats.messages).reduce((x, y) => x + y, 0)
      // Every datagram is either a counted message or a counted drop (malformed and tunnel frames are not messages).
      assert.strictEqual(handled + stats.drops.malformed + stats.drops.tunnel_frame, stats.udp.datagramsIn)
      assert.isAbove(dropped, 0)
      assert.isAtMost(stats.nodes, 64)
    })))
})

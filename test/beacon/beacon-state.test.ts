/**
 * The beacon's pure core: every decision of reference §7 with explicit time (the core has no clock: time is
 * an argument, so expiry is tested by passing later instants), bounds and their counters, and properties over
 * random input (never throws, tables stay within their caps, every reply is a valid beacon message, Sync
 * datagrams stay within 1200 bytes and cover every live node).
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { type AddressAdapter, BeaconState, type BeaconCoreConfig, type Outgoing } from "../../src/beacon/beacon-state.ts"
import { type BeaconMessage, decodeBeaconMessage, encodeBeaconMessage } from "../../src/protocol/beacon.ts"

interface Addr {
  readonly ip: string
  readonly port: number
}
const adapter: AddressAdapter<Addr> = { key: (a) => `${a.ip}|${a.port}`, endpoint: (a) => a, ip: (a) => a.ip }
const at = (ip: string, port: number): Addr => ({ ip, port })
const enc = (m: BeaconMessage) => encodeBeaconMessage(m)
const dec = (o: Outgoing<Addr>) => {
  const r = decodeBeaconMessage(o.bytes)
  if (r._tag === "Failure") throw new Error(r.failure.message)
  return { to: o.to, message: r.success }
}
const make = (config: Partial<BeaconCoreConfig> = {}) => new BeaconState<Addr>({ beaconId: 100, ...config }, adapter)
const FRAME = new Uint8Array([0x50, 0x49, 0x4c, 0x53, 1, 2, 3])

const A = at("10.0.0.1", 4000)
const B = at("10.0.0.2", 5000)
const PEER = at("10.9.9.9", 9001)

describe("beacon core", () => {
  it("answers Discover with the observed endpoint and records the node; node 0 is answered and not recorded", () => {
    const s = make()
    const out = s.receive(enc({ _tag: "Discover", node: 7 }), A, 0).map(dec)
    expect(out).toEqual([{ to: A, message: { _tag: "DiscoverReply", endpoint: { ip: "10.0.0.1", port: 4000 } } }])
    expect(s.endpointOf(7, 0)).toEqual(A)
    expect(s.receive(enc({ _tag: "Discover", node: 0 }), B, 0).map(dec)[0]!.message).toEqual({ _tag: "DiscoverReply", endpoint: B })
    expect(s.stats().nodes).toBe(1)
    expect(s.stats().discoverReplies).toBe(2)
  })

  it("PunchRequest records the requester and sends each side the other's endpoint", () => {
    const s = make()
    s.receive(enc({ _tag: "Discover", node: 2 }), B, 0)
    const out = s.receive(enc({ _tag: "PunchRequest", requester: 1, target: 2 }), A, 1).map(dec)
    expect(out).toEqual([
      { to: A, message: { _tag: "PunchCommand", endpoint: B } },
      { to: B, message: { _tag: "PunchCommand", endpoint: A } }
    ])
    expect(s.endpointOf(1, 1)).toEqual(A)
    expect(s.receive(enc({ _tag: "PunchRequest", requester: 1, target: 3 }), A, 2)).toEqual([])
    expect(s.receive(enc({ _tag: "PunchRequest", requester: 0, target: 2 }), A, 2)).toEqual([])
    expect(s.stats().drops).toMatchObject({ punch_target_unknown: 1, punch_invalid: 1 })
    expect(s.stats().punchCommands).toBe(2)
  })

  it("relays to a local node, counts an unknown destination, and never lets a relay move a mapping", () => {
    const s = make()
    s.receive(enc({ _tag: "Discover", node: 1 }), A, 0)
    s.receive(enc({ _tag: "Discover", node: 2 }), B, 0)
    const out = s.receive(enc({ _tag: "Relay", sender: 1, dest: 2, frame: FRAME }), A, 1).map(dec)
    expect(out).toEqual([{ to: B, message: { _tag: "RelayDeliver", sender: 1, frame: FRAME } }])
    expect(s.receive(enc({ _tag: "Relay", sender: 1, dest: 99, frame: FRAME }), A, 1)).toEqual([])
    expect(s.stats().relayDropped.not_found).toBe(1)
    // A relay claiming sender 2 from elsewhere is still delivered, but does not move 2's mapping.
    const stranger = at("10.6.6.6", 6666)
    s.receive(enc({ _tag: "Relay", sender: 2, dest: 1, frame: FRAME }), stranger, 2)
    expect(s.endpointOf(2, 2)).toEqual(B)
    expect(s.stats().relayDelivered).toBe(2)
  })

  it("a relay from the recorded endpoint refreshes its sender; others do not keep an entry alive", () => {
    const s = make({ nodeTtlMs: 1000 })
    s.receive(enc({ _tag: "Discover", node: 1 }), A, 0)
    s.receive(enc({ _tag: "Discover", node: 2 }), B, 0)
    s.receive(enc({ _tag: "Relay", sender: 1, dest: 2, frame: FRAME }), A, 900)
    s.receive(enc({ _tag: "Relay", sender: 2, dest: 1, frame: FRAME }), at("10.6.6.6", 1), 900)
    expect(s.endpointOf(1, 1500)).toEqual(A)
    expect(s.endpointOf(2, 1500)).toBeUndefined()
  })

  it("forwards a relay for a node a peer gossiped, unchanged; a relay from a peer is never forwarded again", () => {
    const s = make()
    s.setPeers([PEER])
    expect(s.receive(enc({ _tag: "Sync", beaconId: 200, nodes: [5, 6] }), PEER, 0)).toEqual([])
    expect(s.ownerOf(5, 0)).toBe("10.9.9.9|9001")
    s.receive(enc({ _tag: "Discover", node: 1 }), A, 0)
    const datagram = enc({ _tag: "Relay", sender: 1, dest: 5, frame: FRAME })
    const out = s.receive(datagram, A, 1)
    expect(out).toEqual([{ to: PEER, bytes: datagram }])
    expect(s.stats().relayForwarded).toBe(1)
    // The peer relays to 6 (it believes we own it): delivered only locally, so dropped, not bounced back.
    expect(s.receive(enc({ _tag: "Relay", sender: 9, dest: 6, frame: FRAME }), PEER, 2)).toEqual([])
    expect(s.stats().relayDropped.peer_not_local).toBe(1)
    // …and delivered when the destination is ours.
    expect(s.receive(enc({ _tag: "Relay", sender: 9, dest: 1, frame: FRAME }), PEER, 2).map(dec)).toEqual([
      { to: A, message: { _tag: "RelayDeliver", sender: 9, frame: FRAME } }
    ])
  })

  it("accepts Sync only from a peer beacon and not with our own ID; ownership expires; events tell heard and silent", () => {
    const s = make({ ownershipTtlMs: 30_000 })
    s.receive(enc({ _tag: "Sync", beaconId: 200, nodes: [5] }), PEER, 0)
    expect(s.stats().drops.sync_unknown_source).toBe(1)
    // The shell answers this event with an early beacon_list: the sender may have registered since.
    expect(s.takeEvents()).toEqual([{ _tag: "UnknownPeerSynced", peer: "10.9.9.9|9001" }])
    s.setPeers([PEER])
    s.receive(enc({ _tag: "Sync", beaconId: 100, nodes: [5] }), PEER, 0)
    expect(s.stats().drops.sync_own_id).toBe(1)
    expect(s.ownerOf(5, 0)).toBeUndefined()
    s.receive(enc({ _tag: "Sync", beaconId: 200, nodes: [5] }), PEER, 0)
    expect(s.takeEvents()).toEqual([{ _tag: "PeerHeard", peer: "10.9.9.9|9001", beaconId: 200, nodes: 1 }])
    s.receive(enc({ _tag: "Sync", beaconId: 200, nodes: [5] }), PEER, 10_000)
    expect(s.takeEvents()).toEqual([])
    expect(s.ownerOf(5, 39_999)).toBe("10.9.9.9|9001")
    expect(s.ownerOf(5, 40_000)).toBeUndefined()
    s.sweep(40_000)
    expect(s.stats().ownedByPeers).toBe(0)
    expect(s.takeEvents()).toEqual([{ _tag: "PeerSilent", peer: "10.9.9.9|9001", beaconId: 200 }])
    // A peer removed from the set takes its ownership with it.
    s.receive(enc({ _tag: "Sync", beaconId: 200, nodes: [5] }), PEER, 50_000)
    s.setPeers([])
    expect(s.ownerOf(5, 50_000)).toBeUndefined()
  })

  it("expires a node 10 minutes after its last Discover or PunchRequest", () => {
    const s = make()
    s.receive(enc({ _tag: "Discover", node: 1 }), A, 0)
    s.receive(enc({ _tag: "PunchRequest", requester: 1, target: 2 }), A, 300_000)
    expect(s.endpointOf(1, 899_999)).toEqual(A)
    expect(s.endpointOf(1, 900_000)).toBeUndefined()
    s.sweep(899_999)
    expect(s.stats().nodes).toBe(1)
    s.sweep(900_000)
    expect(s.stats().nodes).toBe(0)
  })

  it("rate-limits punch requests, Discover and relays per source IP, independently per IP", () => {
    const s = make({ punchLimit: { burst: 2, perSecond: 1 }, relayLimit: { burst: 3, perSecond: 1 }, discoverLimit: { burst: 1, perSecond: 1 } })
    s.receive(enc({ _tag: "Discover", node: 2 }), B, 0)
    const punch = enc({ _tag: "PunchRequest", requester: 1, target: 2 })
    expect([0, 0, 0].map(() => s.receive(punch, A, 0).length)).toEqual([2, 2, 0])
    expect(s.receive(punch, at("10.0.0.1", 1), 0).length).toBe(0) // same IP, other port: same bucket
    expect(s.receive(punch, A, 1000).length).toBe(2) // refilled
    expect(s.receive(punch, at("10.0.0.3", 1), 0).length).toBe(2) // other IP
    expect(s.stats().drops.punch_rate_limited).toBe(2)
    const relay = enc({ _tag: "Relay", sender: 1, dest: 2, frame: FRAME })
    expect([0, 0, 0, 0].map(() => s.receive(relay, A, 2000).length)).toEqual([1, 1, 1, 0])
    expect(s.stats().relayDropped.rate_limited).toBe(1)
    expect(s.receive(enc({ _tag: "Discover", node: 2 }), B, 0).length).toBe(0)
    expect(s.stats().drops.discover_rate_limited).toBe(1)
  })

  it("counts tunnel frames, malformed datagrams and beacon→node messages, and answers none", () => {
    const s = make()
    expect(s.receive(new Uint8Array([0x50, 0x49, 0x4c, 0x53]), A, 0)).toEqual([])
    expect(s.receive(new Uint8Array([]), A, 0)).toEqual([])
    expect(s.receive(new Uint8Array([0x01, 0x00]), A, 0)).toEqual([])
    expect(s.receive(new Uint8Array([0x09]), A, 0)).toEqual([])
    for (const m of [
      { _tag: "DiscoverReply", endpoint: A },
      { _tag: "PunchCommand", endpoint: A },
      { _tag: "RelayDeliver", sender: 1, frame: FRAME },
      { _tag: "Notify", kind: 1 }
    ] as const) expect(s.receive(enc(m), A, 0)).toEqual([])
    expect(s.stats().drops).toMatchObject({ tunnel_frame: 1, malformed: 3, unexpected: 4 })
  })

  it("stays within its caps: the least recently seen node is evicted, ownership past the cap is refused", () => {
    const s = make({ maxNodes: 3, maxOwnership: 2 })
    for (let n = 1; n <= 3; n++) s.receive(enc({ _tag: "Discover", node: n }), at("10.0.0.1", n), n)
    s.receive(enc({ _tag: "Discover", node: 1 }), at("10.0.0.1", 1), 10) // 1 is now the most recent
    s.receive(enc({ _tag: "Discover", node: 4 }), at("10.0.0.1", 4), 11)
    expect(s.stats()).toMatchObject({ nodes: 3, nodeEvictions: 1 })
    expect(s.endpointOf(2, 11)).toBeUndefined()
    expect(s.endpointOf(1, 11)).toBeDefined()
    s.setPeers([PEER])
    s.receive(enc({ _tag: "Sync", beaconId: 7, nodes: [10, 11, 12] }), PEER, 0)
    expect(s.stats()).toMatchObject({ ownedByPeers: 2, ownershipOverflow: 1 })
  })

  it("property: Sync datagrams stay within 1200 bytes and list exactly the live local nodes, to every peer", () => {
    fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 0xffffffff }), { maxLength: 1500 }), fc.integer({ min: 1, max: 3 }), (nodes, peerCount) => {
      const s = make({ nodeTtlMs: 1000, discoverLimit: { burst: 1e9, perSecond: 1 } })
      nodes.forEach((n, i) => s.receive(enc({ _tag: "Discover", node: n }), at("10.0.0.1", 1 + (i % 60000)), i % 2 === 0 ? 0 : 500))
      const peers = Array.from({ length: peerCount }, (_, i) => at("10.9.9.9", 9000 + i))
      s.setPeers(peers)
      const out = s.gossip(1200) // nodes seen at 0 have expired, those seen at 500 are live
      const live = nodes.filter((_, i) => i % 2 === 1).sort()
      for (const peer of peers) {
        const mine = out.filter((o) => o.to === peer)
        expect(mine.every((o) => o.bytes.byteLength <= 1200)).toBe(true)
        const listed = mine.flatMap((o) => {
          const m = dec(o).message
          return m._tag === "Sync" ? m.nodes : []
        }).sort()
        expect(listed).toEqual(live)
      }
    }), { numRuns: 30 })
  })

  it("property: any datagrams from anyone never throw, keep every table within its cap, and yield only valid messages", () => {
    const datagram = fc.oneof(
      fc.uint8Array({ maxLength: 80 }),
      fc.record({ type: fc.integer({ min: 1, max: 10 }), body: fc.uint8Array({ maxLength: 40 }) }).map(({ type, body }) => new Uint8Array([type, ...body])),
      fc.record({ a: fc.integer({ min: 0, max: 20 }), b: fc.integer({ min: 0, max: 20 }) }).chain(({ a, b }) =>
        fc.constantFrom<BeaconMessage>(
          { _tag: "Discover", node: a },
          { _tag: "PunchRequest", requester: a, target: b },
          { _tag: "Relay", sender: a, dest: b, frame: FRAME },
          { _tag: "Sync", beaconId: a + 1, nodes: [a, b] }
        ).map(enc))
    )
    const input = fc.array(fc.record({ bytes: datagram, src: fc.integer({ min: 0, max: 30 }), dt: fc.integer({ min: 0, max: 120_000 }) }), { maxLength: 300 })
    fc.assert(fc.property(input, (steps) => {
      const s = make({ maxNodes: 8, maxOwnership: 4, nodeTtlMs: 60_000, ownershipTtlMs: 30_000 })
      s.setPeers([at("10.0.0.1", 1), at("10.0.0.2", 2)])
      let now = 0
      for (const step of steps) {
        now += step.dt
        const out = s.receive(step.bytes, at(`10.0.0.${step.src % 4}`, step.src), now)
        for (const o of out) expect(decodeBeaconMessage(o.bytes)._tag).toBe("Success")
        const st = s.stats()
        expect(st.nodes).toBeLessThanOrEqual(8)
        expect(st.ownedByPeers).toBeLessThanOrEqual(4)
      }
      s.sweep(now + 10 * 60_000)
      expect(s.stats()).toMatchObject({ nodes: 0, ownedByPeers: 0 })
    }), { numRuns: 100 })
  })
})

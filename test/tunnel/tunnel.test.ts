/**
 * The tunnel shell on real UDP sockets (127.0.0.1): key exchange on first send, delivery both ways, identity
 * binding, duplicate-PILA storms, peer restarts, replayed PILAs, NAT remaps, forged/replayed/truncated frames,
 * garbage, PILF, keepalives.
 * Every test runs inside `expectNoLeaks`: when its scope closes, no fiber and no socket may be left.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule, type Scope } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import { randomBytes } from "node:crypto"
import { Identity } from "../../src/crypto/identity.ts"
import { decodeEd25519PublicKey } from "../../src/crypto/signing.ts"
import { supervise } from "../../src/lifecycle/supervisor.ts"
import { generateTunnelKeyPair, signKeyExchange } from "../../src/crypto/session.ts"
import { encodePacket } from "../../src/protocol/packet.ts"
import {
  classifyDatagram,
  encodeAuthKeyExchangeFrame,
  encodeKeyExchangeFrame,
  encodePlainFrame,
  ENCRYPTED_HEADER_BYTES
} from "../../src/protocol/tunnel-frame.ts"
import { makeTunnel } from "../../src/tunnel/tunnel.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { makeLogCapture } from "../support/log-capture.ts"
import { registerRequest, startRegistry } from "../support/registry.ts"
import {
  datagram,
  eventually,
  LOOPBACK,
  makeDirectory,
  nextDelivered,
  roundTrip,
  startNode,
  startNat,
  startProxy,
  startRawSocket,
  startStoppable,
  type TunnelNode
} from "./tunnel-harness.ts"

const A = 1001
const B = 1002

/** Generous KX limits for tests that push many key-exchange frames through on purpose. */
const UNLIMITED_KX = { kxBurst: 10_000, kxPerSecond: 10_000 } as const

const statsOf = (node: TunnelNode) => node.tunnel.stats()
/** Runs a test body under the leak check with its log lines captured (the tests stay quiet). */
const checked = <A, E>(body: Effect.Effect<A, E, Scope.Scope>) =>
  expectNoLeaks(body).pipe(Effect.provide(makeLogCapture().layer))
const establishedLines = (logs: ReturnType<typeof makeLogCapture>, peer: number) =>
  logs.at("Info").filter((line) => line.message.includes("tunnel established") && line.annotations["peer_node"] === peer)

describe("tunnel", () => {
  it.live("two tunnels establish a session on first send and deliver both ways; a spoofed inner source is dropped", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const a = yield* startNode(directory, A)
      const b = yield* startNode(directory, B)

      const first = datagram(A, B, new TextEncoder().encode("hello B"))
      assert.strictEqual(a.tunnel.send(B, first), "queued") // no key yet: queued, key exchange started
      const got = yield* nextDelivered(b)
      assert.strictEqual(got.from, A)
      assert.deepStrictEqual(got.packet, { ...first, payload: got.packet.payload })
      assert.deepStrictEqual([...got.packet.payload], [...first.payload])

      const back = yield* roundTrip(b, a)
      assert.strictEqual(back.got.from, B)
      assert.strictEqual(back.got.packet.seq, back.sent.seq)
      assert.strictEqual(a.tunnel.send(B, datagram(A, B)), "sent") // the session exists now
      yield* nextDelivered(b)

      for (const [node, peer] of [[a, b], [b, a]] as const) {
        const stats = statsOf(node)
        assert.strictEqual(stats.encrypted_peers, 1)
        assert.strictEqual(stats.authenticated_peers, 1)
        assert.strictEqual(stats.sessions_installed, 1)
        assert.deepStrictEqual(stats.peer_list, [{
          node_id: peer.nodeId,
          endpoint: NetAddress.formatInet(peer.tunnel.address),
          encrypted: true,
          authenticated: true,
          relay: false
        }])
        assert.isTrue(node.events.some((e) => e.name === "tunnel.established" && e.peerNodeId === peer.nodeId && e.authenticated))
      }

      // A peer with a session cannot speak for a third node: the inner source must be the sender.
      a.tunnel.send(B, datagram(999, B))
      const after = yield* roundTrip(a, b) // the very next delivery is this one: the spoofed packet was not delivered
      assert.strictEqual(after.got.packet.src.node, A)
      assert.strictEqual(statsOf(b).drops.spoofed_source, 1)
      assert.isTrue(b.events.some((e) => e.name === "security.src_spoofed" && e.claimedNode === 999 && e.peerNodeId === A))
      assert.strictEqual(a.tunnel.send(A, datagram(A, A)), "own_node")
    })))

  it.live("the registry keys can come from a real in-process registry; an unknown node is refused", () =>
    checked(Effect.gen(function*() {
      const { client } = yield* startRegistry()
      const registry = yield* client()
      const identities = [Identity.generate(), Identity.generate()] as const
      const register = (identity: Identity) =>
        registry.call(registerRequest(identity, "127.0.0.1:4000")).pipe(Effect.map((reply) => reply["node_id"] as number))
      const idA = yield* register(identities[0])
      const idB = yield* register(identities[1])
      const registryKey = (node: number) =>
        registry.call({ type: "lookup", node_id: node }).pipe(
          Effect.map((reply) => decodeEd25519PublicKey(String(reply["public_key"])))
        )
      const endpoints = new Map<number, NetAddress.InetAddress>()
      const inbox: Array<number> = []
      const start = (identity: Identity, nodeId: number) =>
        makeTunnel({
          identity,
          nodeId,
          bind: LOOPBACK,
          registryKey,
          endpointOf: (node) => Effect.succeed(endpoints.get(node)),
          onPacket: (packet) => {
            inbox.push(packet.seq)
          }
        })
      const a = yield* start(identities[0], idA)
      const b = yield* start(identities[1], idB)
      endpoints.set(idA, a.address)
      endpoints.set(idB, b.address)
      yield* Effect.forkScoped(supervise(a.loops))
      yield* Effect.forkScoped(supervise(b.loops))

      a.send(idB, datagram(idA, idB))
      yield* eventually(() => inbox.length === 1)
      assert.strictEqual(b.stats().authenticated_peers, 1)

      // A PILA from a node the registry has never heard of: the lookup fails, the frame is refused.
      const stranger = Identity.generate()
      const { socket } = yield* startRawSocket()
      const x25519 = generateTunnelKeyPair().publicKey
      socket.send(
        encodeAuthKeyExchangeFrame({
          node: 0x7777,
          x25519,
          ed25519: stranger.publicKey,
          signature: signKeyExchange(stranger, 0x7777, x25519)
        }),
        b.address
      )
      yield* eventually(() => b.stats().drops.kx_rejected.registry_key_unavailable === 1)
      assert.strictEqual(b.stats().registry_lookup_failures, 1)
      assert.strictEqual(b.stats().peers, 1)
    })))

  it.live("a storm of same-key PILAs yields exactly one 'tunnel established' line and never re-installs the session", () => {
    const logs = makeLogCapture()
    return expectNoLeaks(Effect.gen(function*() {
      const directory = makeDirectory()
      const b = yield* startNode(directory, B, { limits: UNLIMITED_KX })
      // A reaches B through a proxy that records A's frames, so the test can replay A's real PILA.
      const proxy = yield* startProxy(b.tunnel.address)
      directory.endpoints.set(B, proxy.address)
      const a = yield* startNode(directory, A)

      yield* roundTrip(a, b)
      yield* roundTrip(b, a)
      const pila = proxy.lastFromClient("AuthKeyExchange")
      assert.isDefined(pila)
      const before = statsOf(b)

      // 200 copies of A's PILA along A's own path (duplicated datagrams, relay copies, retransmits).
      for (let i = 0; i < 200; i++) proxy.socket.send(pila!, b.tunnel.address)
      yield* eventually(() => statsOf(b).kx_accepted === before.kx_accepted + 200)

      // Traffic keeps flowing both ways, on the same session: no new install, no replay or AEAD rejection.
      for (let i = 0; i < 5; i++) {
        yield* roundTrip(a, b)
        yield* roundTrip(b, a)
      }
      const after = statsOf(b)
      assert.strictEqual(after.sessions_installed, 1)
      assert.strictEqual(after.sessions_dropped, 0)
      assert.strictEqual(after.drops.replay + after.drops.outside_window + after.tunnel_encryption_failure, 0)
      assert.strictEqual(after.drops.kx_queue_full, 0)
      assert.strictEqual(statsOf(a).sessions_installed, 1)
      assert.lengthOf(establishedLines(logs, A), 1)
      assert.lengthOf(establishedLines(logs, B), 1)
      assert.isFalse(b.events.some((e) => e.name === "tunnel.established" && e.rekeyed))
    })).pipe(Effect.provide(logs.layer))
  })

  it.live("a lost first PILA is retransmitted by the tick, with a PILK key request, and the session comes up", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const b = yield* startNode(directory, B)
      let dropped = 0
      const proxy = yield* startProxy(b.tunnel.address, (payload) => {
        if (dropped > 0 || classifyDatagram(payload) !== "AuthKeyExchange") return false
        dropped++
        return true
      })
      directory.endpoints.set(B, proxy.address)
      const a = yield* startNode(directory, A)
      assert.strictEqual(a.tunnel.send(B, datagram(A, B)), "queued")
      const { from } = yield* nextDelivered(b, "10 seconds") // the retransmit comes after 4 s
      assert.strictEqual(from, A)
      assert.strictEqual(dropped, 1)
      const kinds = proxy.fromClient.map(classifyDatagram)
      assert.deepStrictEqual(kinds.slice(0, 3), ["AuthKeyExchange", "AuthKeyExchange", "KeyExchange"])
      assert.strictEqual(statsOf(a).encrypted_peers, 1)
    })))

  it.live("a peer restarting with a new X25519 key on a new port is talking again within seconds", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const b = yield* startNode(directory, B)
      const identity = Identity.generate()
      const first = yield* startStoppable(startNode(directory, A, { identity }))
      yield* roundTrip(first.value, b)
      yield* roundTrip(b, first.value)
      yield* first.stop

      const again = yield* startNode(directory, A, { identity }) // same identity and node ID, new key, new port
      // B answers A's PILA at the new port without taking it as A's endpoint; A's first PILS moves that.
      const { got } = yield* roundTrip(again, b).pipe(Effect.timeout("10 seconds"))
      assert.strictEqual(got.from, A)
      yield* roundTrip(b, again)
      assert.strictEqual(statsOf(b).sessions_installed, 2)
      assert.isTrue(b.events.some((e) => e.name === "tunnel.established" && e.rekeyed))
      assert.deepStrictEqual(statsOf(b).peer_list.map((p) => p.endpoint), [NetAddress.formatInet(again.tunnel.address)])
    })))

  it.live("a peer restarting on the same port is re-keyed by the other side's traffic", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const b = yield* startNode(directory, B)
      const identity = Identity.generate()
      const first = yield* startStoppable(startNode(directory, A, { identity }))
      yield* roundTrip(first.value, b)
      const port = first.value.tunnel.address.port
      yield* first.stop

      const again = yield* startNode(directory, A, { identity, port })
      // B still holds the old session: its packet reaches a tunnel that has no key for it, which asks B for
      // its key (PILA + PILK); B sees A's new key and re-keys.
      assert.strictEqual(b.tunnel.send(A, datagram(B, A)), "sent")
      yield* eventually(() => b.events.some((e) => e.name === "tunnel.established" && e.rekeyed), "10 seconds")
      yield* eventually(() => statsOf(again).encrypted_peers === 1)
      assert.strictEqual(statsOf(again).drops.no_session, 1)
      const { got } = yield* roundTrip(b, again)
      assert.strictEqual(got.from, B)
      yield* roundTrip(again, b)
    })))

  it.live("forged, replayed and truncated PILS frames are counted and never disturb the session", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const b = yield* startNode(directory, B)
      const proxy = yield* startProxy(b.tunnel.address)
      const a = yield* startNode(directory, A)
      directory.endpoints.set(B, proxy.address)
      yield* roundTrip(a, b)
      yield* roundTrip(b, a)
      const { socket: attacker } = yield* startRawSocket()
      const inject = (frames: ReadonlyArray<Uint8Array>) => {
        for (const frame of frames) attacker.send(frame, b.tunnel.address)
      }

      for (let round = 1; round <= 3; round++) {
        yield* roundTrip(a, b)
        const captured = proxy.lastFromClient("Encrypted")!
        const before = statsOf(b)
        // Fewer than the core's drop gates (5 in a row): a successful frame in between resets them.
        const wrongTag = new Uint8Array(captured)
        wrongTag[wrongTag.length - 1]! ^= 0x01
        const randomBody = new Uint8Array(captured.byteLength)
        randomBody.set(captured.subarray(0, ENCRYPTED_HEADER_BYTES))
        randomBody.set(randomBytes(captured.byteLength - ENCRYPTED_HEADER_BYTES), ENCRYPTED_HEADER_BYTES)
        inject([wrongTag, randomBody, captured.subarray(0, captured.byteLength - 1)])
        inject([captured, captured, captured]) // replays
        inject([captured.subarray(0, ENCRYPTED_HEADER_BYTES + 15), captured.subarray(0, 6)]) // truncated
        yield* eventually(() => {
          const now = statsOf(b)
          return now.tunnel_encryption_failure === before.tunnel_encryption_failure + 3 &&
            now.drops.replay === before.drops.replay + 3 &&
            now.drops.malformed === before.drops.malformed + 2
        })
        yield* roundTrip(a, b)
        yield* roundTrip(b, a)
      }
      const stats = statsOf(b)
      assert.strictEqual(stats.tunnel_encryption_failure, 9)
      assert.strictEqual(stats.drops.replay, 9)
      assert.strictEqual(stats.drops.malformed, 6)
      assert.strictEqual(stats.sessions_installed, 1)
      assert.strictEqual(stats.sessions_dropped, 0)
      assert.strictEqual(statsOf(a).sessions_installed, 1)
      assert.strictEqual(stats.encrypted_peers, 1)
    })))

  it.live("a captured PILA replayed from another address never redirects the peer's traffic", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const b = yield* startNode(directory, B)
      // A reaches B through a proxy that records A's frames: the attacker's capture of A's PILA.
      const proxy = yield* startProxy(b.tunnel.address)
      directory.endpoints.set(B, proxy.address)
      const a = yield* startNode(directory, A)
      yield* roundTrip(a, b)
      yield* roundTrip(b, a)
      const pila = proxy.lastFromClient("AuthKeyExchange")
      assert.isDefined(pila)

      const { received, socket: attacker } = yield* startRawSocket()
      const before = statsOf(b)
      const keepalivesFromA = () => b.events.filter((e) => e.name === "tunnel.established" && e.peerNodeId === A).length
      const seen = keepalivesFromA()
      // Within 250 ms of the install a replay is a mere duplicate: replay until B takes one for A's keepalive
      // (more often than the per-IP bucket allows: some are refused before any crypto).
      let replays = 0
      yield* Effect.sync(() => {
        attacker.send(pila!, b.tunnel.address)
        replays++
      }).pipe(
        Effect.repeat({ until: () => keepalivesFromA() > seen, schedule: Schedule.spaced("50 millis") }),
        Effect.timeout("5 seconds")
      )
      yield* eventually(() => {
        const now = statsOf(b)
        return now.kx_accepted + now.drops.kx_rate_limited === before.kx_accepted + before.drops.kx_rate_limited + replays
      })

      // B's traffic for A still goes to A's real endpoint, on the same session.
      for (let i = 0; i < 3; i++) {
        yield* roundTrip(b, a)
        yield* roundTrip(a, b)
      }
      assert.deepStrictEqual(statsOf(b).peer_list.map((p) => p.endpoint), [NetAddress.formatInet(proxy.address)])
      assert.strictEqual(statsOf(b).sessions_installed, 1)
      assert.strictEqual(statsOf(a).sessions_installed, 1)
      // The attacker got no PILS, at most one PILA (an answer to the key exchange it sent, nothing more).
      const kinds = received.map(classifyDatagram)
      assert.isAtMost(kinds.length, 1)
      assert.isTrue(kinds.every((kind) => kind === "AuthKeyExchange"))
    })))

  it.live("a NAT remap moves the peer's endpoint on its next authenticated packet", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const b = yield* startNode(directory, B)
      const nat = yield* startNat(b.tunnel.address)
      directory.endpoints.set(B, nat.address)
      const a = yield* startNode(directory, A)
      yield* roundTrip(a, b)
      yield* roundTrip(b, a)
      const endpointAtB = () => statsOf(b).peer_list.map((p) => p.endpoint)
      const first = NetAddress.formatInet(nat.mapped())
      assert.deepStrictEqual(endpointAtB(), [first])

      nat.remap() // A's next PILS reaches B from a new port; B's packets to the old one are lost
      const remapped = NetAddress.formatInet(nat.mapped())
      assert.notStrictEqual(remapped, first)
      yield* roundTrip(a, b)
      assert.deepStrictEqual(endpointAtB(), [remapped])
      yield* roundTrip(b, a)
      assert.strictEqual(nat.droppedAtOldMapping(), 0)
      assert.strictEqual(statsOf(b).sessions_installed, 1)
    })))

  it.live("unknown magics, garbage and badly signed PILAs are counted and ignored", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const b = yield* startNode(directory, B, { limits: UNLIMITED_KX })
      const idA = Identity.generate()
      directory.keys.set(A, idA.publicKey)
      const { socket } = yield* startRawSocket()
      const inject = (frame: Uint8Array) => socket.send(frame, b.tunnel.address)

      inject(new TextEncoder().encode("XXXX and then some"))
      inject(randomBytes(64).fill(0x7a, 0, 1))
      inject(new Uint8Array([0x50, 0x49, 0x4c])) // "PIL": too short for a magic
      inject(new Uint8Array([0x01, 2, 3])) // a beacon message type
      inject(encodePlainFrame({ packet: datagram(A, B) })) // PILT: plaintext is refused
      inject(new Uint8Array([0x50, 0x49, 0x4c, 0x41, 1, 2, 3])) // PILA of the wrong length
      inject(new Uint8Array([0x50, 0x49, 0x4c, 0x50])) // PILP: a punch

      const x25519 = generateTunnelKeyPair().publicKey
      const impostor = Identity.generate()
      // A's registry key in the frame, but signed by someone else.
      inject(encodeAuthKeyExchangeFrame({ node: A, x25519, ed25519: idA.publicKey, signature: signKeyExchange(impostor, A, x25519) }))
      // Properly self-signed, but not with the key the registry has for A.
      inject(encodeAuthKeyExchangeFrame({ node: A, x25519, ed25519: impostor.publicKey, signature: signKeyExchange(impostor, A, x25519) }))
      // Claiming to be B itself.
      inject(encodeAuthKeyExchangeFrame({ node: B, x25519, ed25519: idA.publicKey, signature: signKeyExchange(idA, B, x25519) }))

      yield* eventually(() => {
        const { kx_rejected } = statsOf(b).drops
        return kx_rejected.bad_signature === 1 && kx_rejected.registry_key_mismatch === 1 && kx_rejected.own_node === 1
      })
      const stats = statsOf(b)
      assert.strictEqual(stats.drops.unknown_magic, 3)
      assert.strictEqual(stats.drops.beacon, 1)
      assert.strictEqual(stats.drops.plaintext, 1)
      assert.strictEqual(stats.drops.malformed, 1)
      assert.strictEqual(stats.drops.punch, 1)
      assert.strictEqual(stats.kx_accepted, 0)
      assert.strictEqual(stats.peers, 0)
      assert.strictEqual(stats.udp.datagramsIn, 10)
    })))

  it.live("key-exchange frames over 5 per second from one IP are rate-limited before any crypto", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const b = yield* startNode(directory, B)
      const { socket } = yield* startRawSocket()
      const frame = encodeKeyExchangeFrame({ node: A, x25519: generateTunnelKeyPair().publicKey })
      for (let i = 0; i < 50; i++) socket.send(frame, b.tunnel.address)
      yield* eventually(() => statsOf(b).drops.kx_rate_limited + statsOf(b).kx_accepted === 50)
      // The burst is 5 and the bucket refills at 5/s: a burst sent within a second or two passes 5 to 15.
      assert.isAtLeast(statsOf(b).drops.kx_rate_limited, 35)
    })))

  it.live("a peer with no known endpoint: packets wait (64 at most), the failed lookup is counted", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const a = yield* startNode(directory, A)
      const outcomes = Array.from({ length: 66 }, () => a.tunnel.send(B, datagram(A, B)))
      assert.deepStrictEqual(outcomes.slice(62), ["queued", "queued", "pending_full", "pending_full"])
      yield* eventually(() => statsOf(a).endpoint_lookup_failures === 1)
      const stats = statsOf(a)
      assert.strictEqual(stats.endpoint_lookups, 1) // one lookup for the peer, not one per packet
      assert.strictEqual(stats.handshake_pending_count, 1)
      assert.strictEqual(stats.drops.send.pending_full, 2)
      assert.strictEqual(stats.kx_sent, 0)
      assert.deepStrictEqual(stats.peer_list, [{ node_id: B, endpoint: undefined, encrypted: false, authenticated: false, relay: false }])
    })))

  it.live("a 4 KB packet crosses as PILF fragments and arrives intact, both ways", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const a = yield* startNode(directory, A)
      const b = yield* startNode(directory, B)
      yield* roundTrip(a, b)
      const big = randomBytes(4096)
      const there = yield* roundTrip(a, b, big)
      assert.deepStrictEqual([...there.got.packet.payload], [...big])
      const back = yield* roundTrip(b, a, big)
      assert.deepStrictEqual([...back.got.packet.payload], [...big])
      assert.strictEqual(encodePacket(back.sent).byteLength, 4096 + 34)
      assert.strictEqual(statsOf(a).fragments_sent, 4) // 4130 + 36 bytes of PILS in 1209-byte chunks
      assert.strictEqual(statsOf(b).frames_reassembled, 1)
      assert.strictEqual(statsOf(a).frames_reassembled, 1)
    })))

  it.live("a peer we send nothing to gets NAT keepalives, which are authenticated but never delivered", () =>
    checked(Effect.gen(function*() {
      const directory = makeDirectory()
      const fastKeepalives = { tickInterval: "50 millis", keepaliveIntervalMs: 200 } as const
      const a = yield* startNode(directory, A, { limits: fastKeepalives })
      const b = yield* startNode(directory, B)
      yield* roundTrip(a, b)
      const before = statsOf(b)
      yield* eventually(() => statsOf(b).tunnel_encryption_success >= before.tunnel_encryption_success + 2)
      assert.isAtLeast(statsOf(a).keepalives_sent, 2)
      assert.strictEqual(statsOf(b).pkts_recv, before.pkts_recv)
      const { got } = yield* roundTrip(a, b)
      assert.strictEqual(got.from, A) // nothing else was delivered before this packet
    })))
})

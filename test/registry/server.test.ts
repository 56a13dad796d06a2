/**
 * The registry end to end on a real TCP socket: request semantics, authentication, privacy, relayed
 * handshakes, limits, and the defined behaviour for bad clients.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as net from "node:net"
import { Identity } from "../../src/crypto/identity.ts"
import { encodeFrame, makeFrameSplitter } from "../../src/protocol/length-prefixed.ts"
import { INBOX_CAPACITY } from "../../src/registry/store.ts"
import type { RegistryClient } from "../../src/registry/client.ts"
import {
  deregisterChallenge,
  handshakeChallenge,
  punchChallenge,
  rotateKeyChallenge,
  heartbeatChallenge,
  pollHandshakesChallenge,
  reportTrustChallenge,
  resolveChallenge,
  revokeTrustChallenge,
  setTagsChallenge,
  setVisibilityChallenge
} from "../../src/protocol/registry.ts"
import { registerRequest, startRegistry } from "../support/registry.ts"

const rejection = (effect: Effect.Effect<unknown, unknown>) =>
  effect.pipe(
    Effect.flip,
    Effect.map((e) => (e as { readonly _tag: string; readonly code?: string }).code ?? (e as { _tag: string })._tag)
  )

const join = (client: RegistryClient, id: Identity, extra: Record<string, unknown> = {}) =>
  client.call(registerRequest(id, "127.0.0.1:4000", extra)).pipe(Effect.map((r) => r["node_id"] as number))

/** A registry with two nodes registered, and a client of it. */
const aliceAndBob = Effect.gen(function*() {
  const { client } = yield* startRegistry()
  const c = yield* client()
  const alice = Identity.generate()
  const bob = Identity.generate()
  return { c, alice, bob, a: yield* join(c, alice), b: yield* join(c, bob) }
})

describe("pilot-registry over TCP", () => {
  it.live("register, lookup and visibility: the endpoint is hidden until the node goes public", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry()
      const c = yield* client()
      const alice = Identity.generate()
      const reply = yield* c.call(registerRequest(alice, ":4000", { hostname: "alice" }))
      assert.strictEqual(reply["type"], "register_ok")
      assert.strictEqual(reply["network_id"], 0)
      assert.strictEqual(reply["hostname"], "alice")
      assert.strictEqual(reply["observed_addr"], "127.0.0.1:4000")
      const id = reply["node_id"] as number
      assert.strictEqual(reply["address"], `0:0000.0000.${id.toString(16).toUpperCase().padStart(4, "0")}`)

      const hidden = yield* c.call({ type: "lookup", node_id: id })
      assert.strictEqual(hidden["public_key"], alice.publicKeyBase64)
      assert.isFalse(hidden["public"])
      assert.notProperty(hidden, "real_addr")
      yield* c.call({ type: "set_visibility", node_id: id, public: true, signature: alice.signChallenge(setVisibilityChallenge(id)) })
      const shown = yield* c.call({ type: "lookup", node_id: id })
      assert.strictEqual(shown["real_addr"], "127.0.0.1:4000") // ":4000" took the observed IP

      const again = yield* c.call(registerRequest(alice, ":4000"))
      assert.strictEqual(again["node_id"], id) // the same key reclaims the same ID
      const found = yield* c.call({ type: "resolve_hostname", hostname: "alice" })
      assert.strictEqual(found["node_id"], id)
    }))

  it.live("an invalid hostname is reported while the registration succeeds", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry()
      const c = yield* client()
      const reply = yield* c.call(registerRequest(Identity.generate(), ":4000", { hostname: "Not_Valid" }))
      assert.strictEqual(reply["type"], "register_ok")
      assert.include(String(reply["hostname_error"]), "lowercase")
      assert.notProperty(reply, "hostname")
    }))

  it.live("signed requests: a missing, wrong or foreign signature changes nothing", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry()
      const c = yield* client()
      const alice = Identity.generate()
      const mallory = Identity.generate()
      const id = yield* join(c, alice)
      assert.strictEqual(yield* rejection(c.call({ type: "heartbeat", node_id: id })), "signature_required")
      const forged = mallory.signChallenge(heartbeatChallenge(id))
      assert.strictEqual(yield* rejection(c.call({ type: "heartbeat", node_id: id, signature: forged })), "invalid_signature")
      const wrongChallenge = alice.signChallenge(heartbeatChallenge(id + 1))
      assert.strictEqual(yield* rejection(c.call({ type: "heartbeat", node_id: id, signature: wrongChallenge })), "invalid_signature")
      const tags = { type: "set_tags", node_id: id, tags: ["x"], signature: mallory.signChallenge(setTagsChallenge(id)) }
      assert.strictEqual(yield* rejection(c.call(tags)), "invalid_signature")
      assert.notProperty(yield* c.call({ type: "lookup", node_id: id }), "tags")
      const ok = yield* c.call({ type: "heartbeat", node_id: id, signature: alice.signChallenge(heartbeatChallenge(id)) })
      assert.strictEqual(ok["type"], "heartbeat_ok")
      assert.strictEqual(yield* rejection(c.call({ type: "heartbeat", node_id: 999_999, signature: forged })), "node_not_found")
    }))

  it.live("resolve: a private node's endpoint needs a trust pair reported by both sides", () =>
    Effect.gen(function*() {
      const { c, alice, bob, a, b } = yield* aliceAndBob
      const resolveB = { type: "resolve", node_id: b, requester_id: a, signature: alice.signChallenge(resolveChallenge(a, b)) }
      assert.strictEqual(yield* rejection(c.call(resolveB)), "not_authorized")
      yield* c.call({ type: "report_trust", node_id: a, peer_id: b, signature: alice.signChallenge(reportTrustChallenge(a, b)) })
      assert.strictEqual(yield* rejection(c.call(resolveB)), "not_authorized") // alice alone cannot vouch for bob
      yield* c.call({ type: "report_trust", node_id: b, peer_id: a, signature: bob.signChallenge(reportTrustChallenge(b, a)) })
      assert.strictEqual((yield* c.call(resolveB))["real_addr"], "127.0.0.1:4000")
      yield* c.call({ type: "revoke_trust", node_id: b, peer_id: a, signature: bob.signChallenge(revokeTrustChallenge(b, a)) })
      assert.strictEqual(yield* rejection(c.call(resolveB)), "not_authorized")
    }))

  it.live("relayed handshakes: requests and responses wait in the inbox, which is capped", () =>
    Effect.gen(function*() {
      const { c, alice, bob, a, b } = yield* aliceAndBob
      const request = {
        type: "request_handshake",
        from_node_id: a,
        to_node_id: b,
        justification: "let's talk",
        signature: alice.signChallenge(handshakeChallenge(a, b))
      }
      yield* c.call(request)
      const poll = { type: "poll_handshakes", node_id: b, signature: bob.signChallenge(pollHandshakesChallenge(b)) }
      const first = yield* c.call(poll)
      assert.deepStrictEqual(first["requests"], [{ from_node_id: a, justification: "let's talk" }])
      assert.deepStrictEqual((yield* c.call(poll))["requests"], []) // the inbox empties as it answers
      for (let i = 0; i < INBOX_CAPACITY; i++) yield* c.call(request)
      assert.strictEqual(yield* rejection(c.call(request)), "inbox_full")
    }))

  it.live("new-key registrations are rate limited per source IP; known keys are not", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry({ registrationsPerMinute: 3 })
      const c = yield* client()
      const first = Identity.generate()
      yield* join(c, first)
      yield* join(c, Identity.generate())
      yield* join(c, Identity.generate())
      assert.strictEqual(yield* rejection(join(c, Identity.generate())), "rate_limited")
      yield* join(c, first) // a known key re-registers freely
    }))

  it.live("bad requests get error replies and the connection stays usable", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry()
      const c = yield* client()
      assert.strictEqual(yield* rejection(c.call({ type: "fly_to_the_moon" })), "unknown_type")
      assert.strictEqual(yield* rejection(c.call({ type: "lookup", node_id: "seven" })), "bad_request")
      assert.strictEqual(yield* rejection(c.call({ type: "lookup", node_id: -1 })), "bad_request")
      const id = yield* join(c, Identity.generate())
      const tags = { type: "set_tags", node_id: id, tags: ["a", "b", "c", "d"], signature: "x" }
      assert.strictEqual(yield* rejection(c.call(tags)), "invalid_tags")
      assert.strictEqual((yield* c.call({ type: "lookup", node_id: id }))["node_id"], id)
    }))

  it.live("raw bytes: invalid JSON is answered in line, an oversize length prefix closes the connection", () =>
    Effect.gen(function*() {
      const { port } = yield* startRegistry()
      const frame = (text: string) => Result.getOrThrow(encodeFrame(Buffer.from(text)))
      /** Writes `bytes`, then collects reply bodies until `replies` arrived or the server closed. */
      const exchange = (bytes: Uint8Array, replies: number) =>
        Effect.callback<{ readonly bodies: ReadonlyArray<string>; readonly closed: boolean }>((resume) => {
          const splitter = makeFrameSplitter()
          const bodies: Array<string> = []
          const socket = net.connect(port, "127.0.0.1", () => socket.write(bytes))
          socket.on("data", (chunk) => {
            for (const body of Result.getOrThrow(splitter.push(chunk))) bodies.push(Buffer.from(body).toString())
            if (bodies.length === replies) resume(Effect.succeed({ bodies, closed: false }))
          })
          socket.on("close", () => resume(Effect.succeed({ bodies, closed: true })))
          socket.on("error", () => {})
          return Effect.sync(() => socket.destroy())
        }).pipe(Effect.timeout("5 seconds"))
      const notJson = yield* exchange(Buffer.concat([frame("{oops"), frame("[1]"), frame("{\"type\":\"beacon_list\"}")]), 3)
      assert.isFalse(notJson.closed)
      assert.deepStrictEqual(notJson.bodies.map((b) => JSON.parse(b).code ?? JSON.parse(b).type), ["bad_request", "bad_request", "beacon_list_ok"])
      const oversize = yield* exchange(Buffer.from([0x00, 0x10, 0x00, 0x01, 1, 2, 3]), 2)
      assert.isTrue(oversize.closed)
      assert.deepStrictEqual(oversize.bodies.map((b) => JSON.parse(b).code), ["too_large"])
    }))

  it.live("past the connection cap a newcomer is told so and closed, and the others keep working", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry({ maxConnections: 2 })
      const c1 = yield* client()
      const c2 = yield* client()
      const id = yield* join(c1, Identity.generate())
      yield* c2.call({ type: "lookup", node_id: id })
      const c3 = yield* client()
      assert.strictEqual(yield* rejection(c3.call({ type: "lookup", node_id: id })), "too_many_connections")
      assert.strictEqual((yield* c1.call({ type: "lookup", node_id: id }))["node_id"], id)
    }))

  it.live("a client that starts a frame and stalls is disconnected after the frame deadline", () =>
    Effect.gen(function*() {
      const { port } = yield* startRegistry({ frameTimeout: "200 millis" })
      const closed = yield* Effect.callback<boolean>((resume) => {
        const socket = net.connect(port, "127.0.0.1", () => socket.write(Buffer.from([0, 0, 0, 50, 123])))
        socket.on("close", () => resume(Effect.succeed(true)))
        socket.on("error", () => {})
        return Effect.sync(() => socket.destroy())
      }).pipe(Effect.timeout("5 seconds"))
      assert.isTrue(closed)
    }))

  it.live("punch: only a participant may ask, and only for a peer it may see", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry()
      const c = yield* client()
      const alice = Identity.generate()
      const bob = Identity.generate()
      const carol = Identity.generate()
      const a = yield* join(c, alice)
      const b = yield* join(c, bob)
      const punch = (who: Identity, requester: number) =>
        c.call({ type: "punch", requester_id: requester, node_a: a, node_b: b, signature: who.signChallenge(punchChallenge(a, b)) })
      const outsider = yield* join(c, carol)
      assert.strictEqual(yield* rejection(punch(carol, outsider)), "not_authorized")
      assert.strictEqual(yield* rejection(punch(alice, a)), "not_authorized") // bob is private, no trust pair
      yield* c.call({ type: "set_visibility", node_id: b, public: true, signature: bob.signChallenge(setVisibilityChallenge(b)) })
      const reply = yield* punch(alice, a)
      assert.deepStrictEqual([reply["node_a_addr"], reply["node_b_addr"]], ["127.0.0.1:4000", "127.0.0.1:4000"])
    }))

  it.live("beacons register and are listed with the address the registry sees", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry()
      const c = yield* client()
      yield* c.call({ type: "beacon_register", beacon_id: 7, addr: ":9001" })
      const list = yield* c.call({ type: "beacon_list" })
      assert.deepStrictEqual(list["beacons"], [{ id: 7, addr: "127.0.0.1:9001" }])
      assert.strictEqual(yield* rejection(c.call({ type: "beacon_register", beacon_id: 8, addr: "no-port" })), "bad_request")
    }))

  it.live("rotate_key needs the current key; afterwards only the new key signs for the node", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry()
      const c = yield* client()
      const old = Identity.generate()
      const next = Identity.generate()
      const id = yield* join(c, old)
      const rotate = (signer: Identity) =>
        c.call({ type: "rotate_key", node_id: id, new_public_key: next.publicKeyBase64, signature: signer.signChallenge(rotateKeyChallenge(id)) })
      assert.strictEqual(yield* rejection(rotate(next)), "invalid_signature")
      const rotated = yield* rotate(old)
      assert.strictEqual(rotated["public_key"], next.publicKeyBase64)
      const heartbeat = (signer: Identity) => c.call({ type: "heartbeat", node_id: id, signature: signer.signChallenge(heartbeatChallenge(id)) })
      assert.strictEqual(yield* rejection(heartbeat(old)), "invalid_signature")
      assert.strictEqual((yield* heartbeat(next))["type"], "heartbeat_ok")
      assert.strictEqual((yield* join(c, next)), id) // the new key now reclaims the node ID
    }))

  it.live("deregister (signed) ends the lease at once", () =>
    Effect.gen(function*() {
      const { client } = yield* startRegistry()
      const c = yield* client()
      const alice = Identity.generate()
      const id = yield* join(c, alice, { hostname: "gone" })
      yield* c.call({ type: "deregister", node_id: id, signature: alice.signChallenge(deregisterChallenge(id)) })
      assert.strictEqual(yield* rejection(c.call({ type: "lookup", node_id: id })), "node_not_found")
      assert.strictEqual(yield* rejection(c.call({ type: "resolve_hostname", hostname: "gone" })), "hostname_not_found")
    }))
})

/**
 * Two daemons' data planes on loopback, on real UDP sockets: encrypted tunnels, streams and the echo service,
 * with and without packet loss. Every test ends with the lifecycle check (no fiber or handle left).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Queue, Scope } from "effect"
import type * as NetAddress from "effect/net/NetAddress"
import { createHash } from "node:crypto"
import { Identity } from "../../src/crypto/identity.ts"
import { makeDataPlane } from "../../src/daemon/data-plane.ts"
import { WellKnownPort } from "../../src/protocol/packet.ts"
import { ACCEPT_QUEUE_CAPACITY } from "../../src/transport/ports.ts"
import type { Connection } from "../../src/transport/transport.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { startLossyLink } from "../support/lossy-link.ts"

const A = 1
const B = 2
const SINK_PORT = 1000

interface Directory {
  readonly keys: Map<number, Uint8Array>
  readonly endpoints: Map<number, NetAddress.InetAddress>
}

const startPlane = (directory: Directory, nodeId: number) =>
  Effect.gen(function*() {
    const identity = Identity.generate()
    directory.keys.set(nodeId, identity.publicKey)
    const plane = yield* makeDataPlane({
      identity,
      nodeId,
      bind: { host: "127.0.0.1", port: 0 },
      registryKey: (node) => Effect.succeed(directory.keys.get(node)),
      endpointOf: (node) => Effect.succeed(directory.endpoints.get(node))
    })
    directory.endpoints.set(nodeId, plane.tunnel.address)
    yield* Effect.forkScoped(plane.failure)
    return plane
  })

/** Reads everything until the peer closes, hashing it. */
const drain = (connection: Connection) =>
  Effect.gen(function*() {
    const hash = createHash("sha256")
    let bytes = 0
    while (true) {
      const chunk = yield* connection.read
      if (chunk === undefined) break
      hash.update(chunk)
      bytes += chunk.byteLength
    }
    yield* connection.close
    return { bytes, digest: hash.digest("hex") }
  })

const pattern = (size: number) => {
  const data = new Uint8Array(size)
  for (let i = 0; i < size; i++) data[i] = (i * 2654435761) >>> 24
  return data
}

/** A sends `size` bytes to B's sink over one stream; returns what B received. */
const transfer = (size: number, lossy?: { loss: number; seed: number }) =>
  Effect.gen(function*() {
    const directory: Directory = { keys: new Map(), endpoints: new Map() }
    const a = yield* startPlane(directory, A)
    const b = yield* startPlane(directory, B)
    if (lossy !== undefined) {
      const link = yield* startLossyLink(a.tunnel.address, b.tunnel.address, lossy.loss, lossy.seed)
      directory.endpoints.set(B, link.towardB)
      directory.endpoints.set(A, link.towardA)
    }
    const listener = yield* b.transport.listen(SINK_PORT)
    const received = yield* Effect.forkChild(Effect.flatMap(listener.accept, drain))
    const data = pattern(size)
    const connection = yield* a.transport.dial({ network: 0, node: B }, SINK_PORT)
    yield* connection.write(data)
    yield* connection.close
    const result = yield* Fiber.join(received).pipe(Effect.timeout("90 seconds"))
    return { result, expected: createHash("sha256").update(data).digest("hex"), a, b, connection }
  })

describe("data plane on real UDP sockets", () => {
  it.live("10 MB over one encrypted stream arrives intact", () =>
    expectNoLeaks(Effect.gen(function*() {
      const { result, expected, a, b } = yield* transfer(10 * 1024 * 1024)
      assert.strictEqual(result.bytes, 10 * 1024 * 1024)
      assert.strictEqual(result.digest, expected)
      assert.strictEqual(a.tunnel.stats().tunnel_encryption_failure, 0)
      assert.isAbove(b.tunnel.stats().tunnel_encryption_success, 2560) // ≥ 10 MB / 4 KB segments, all decrypted
    })), 120_000)

  it.live("10 MB arrives intact through a link that loses 5 % of datagrams each way", () =>
    expectNoLeaks(Effect.gen(function*() {
      const { result, expected, connection } = yield* transfer(10 * 1024 * 1024, { loss: 0.05, seed: 20261124 })
      assert.strictEqual(result.digest, expected)
      assert.isAbove(connection.info().retransmits + connection.info().fast_retx, 0) // loss really happened
    })), 120_000)

  it.live("the echo service on port 7 returns what it is sent", () =>
    expectNoLeaks(Effect.gen(function*() {
      const directory: Directory = { keys: new Map(), endpoints: new Map() }
      const a = yield* startPlane(directory, A)
      yield* startPlane(directory, B)
      const connection = yield* a.transport.dial({ network: 0, node: B }, WellKnownPort.Echo)
      const data = pattern(300 * 1024)
      const echoed = yield* Effect.forkChild(drain(connection))
      yield* connection.write(data)
      yield* connection.close
      const result = yield* Fiber.join(echoed).pipe(Effect.timeout("30 seconds"))
      assert.strictEqual(result.digest, createHash("sha256").update(data).digest("hex"))
    })), 60_000)

  it.live("a dial to a port nobody listens on is refused", () =>
    expectNoLeaks(Effect.gen(function*() {
      const directory: Directory = { keys: new Map(), endpoints: new Map() }
      const a = yield* startPlane(directory, A)
      yield* startPlane(directory, B)
      const error = yield* a.transport.dial({ network: 0, node: B }, 4242).pipe(Effect.flip)
      assert.strictEqual(error.code, "connection_refused")
    })), 60_000)

  it.live("datagrams reach the port they are sent to; a full accept queue refuses the next dial", () =>
    expectNoLeaks(Effect.gen(function*() {
      const directory: Directory = { keys: new Map(), endpoints: new Map() }
      const a = yield* startPlane(directory, A)
      const b = yield* startPlane(directory, B)
      const inbox = yield* b.transport.bindDatagrams(5000)
      yield* a.transport.sendDatagram({ network: 0, node: B }, 5000, new TextEncoder().encode("hello"))
      const datagram = yield* Queue.take(inbox).pipe(Effect.timeout("10 seconds"))
      assert.strictEqual(new TextDecoder().decode(datagram.payload), "hello")
      assert.deepStrictEqual([datagram.src.node, datagram.dstPort], [A, 5000])

      yield* b.transport.listen(SINK_PORT) // never accepts
      yield* Effect.forEach(Array.from({ length: ACCEPT_QUEUE_CAPACITY }), () => a.transport.dial({ network: 0, node: B }, SINK_PORT), { concurrency: 8 })
      const refused = yield* a.transport.dial({ network: 0, node: B }, SINK_PORT).pipe(Effect.flip)
      assert.strictEqual(refused.code, "connection_refused")
      assert.strictEqual(b.transport.stats().acceptQueueDrops, 1)
    })), 60_000)

  it.live("a data plane that stops resets its connections, so the peer learns at once", () =>
    expectNoLeaks(Effect.gen(function*() {
      const directory: Directory = { keys: new Map(), endpoints: new Map() }
      const a = yield* startPlane(directory, A)
      const bScope = yield* Scope.make()
      const b = yield* startPlane(directory, B).pipe(Scope.provide(bScope))
      const listener = yield* b.transport.listen(SINK_PORT).pipe(Scope.provide(bScope))
      const accepted = yield* Effect.forkChild(listener.accept)
      const connection = yield* a.transport.dial({ network: 0, node: B }, SINK_PORT)
      yield* Fiber.join(accepted)
      yield* Scope.close(bScope, Exit.void)
      // Well before any timeout (idle 120 s, retransmission budget): the reset arrived.
      const error = yield* connection.read.pipe(Effect.flip, Effect.timeout("5 seconds"))
      assert.strictEqual(error.code, "reset_by_peer")
    })), 60_000)
})

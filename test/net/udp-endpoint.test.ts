/**
 * The UDP endpoint on real loopback sockets: datagrams both ways with their source, a full send queue drops
 * and counts, a datagram the OS refuses does not stop the writer, and the socket is closed when its scope
 * ends (no handle left, the port can be bound again).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Queue, Schedule, Scope } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import { Buffer } from "node:buffer"
import { supervise } from "../../src/lifecycle/supervisor.ts"
import { inetAddress, makeUdpEndpoint, type UdpDatagram } from "../../src/net/udp-endpoint.ts"
import { expectNoLeaks } from "../support/leak-check.ts"

const LOOPBACK = { host: "127.0.0.1", port: 0 } as const

/** An endpoint whose received datagrams go to a queue; loops not started. */
const endpoint = (options: { readonly sendQueue?: number; readonly port?: number } = {}) =>
  Effect.gen(function*() {
    const inbox = yield* Queue.unbounded<UdpDatagram>()
    const udp = yield* makeUdpEndpoint({ ...options, bind: { ...LOOPBACK, port: options.port ?? 0 } }, (datagram) => {
      Queue.offerUnsafe(inbox, datagram)
    })
    return { udp, inbox, next: Queue.take(inbox).pipe(Effect.timeout("5 seconds")) }
  })

const run = (udp: { readonly reader: Effect.Effect<never, unknown>; readonly writer: Effect.Effect<never, unknown> }) =>
  Effect.forkScoped(supervise({ reader: udp.reader, writer: udp.writer }))

const bytes = (...values: Array<number>) => new Uint8Array(values)

describe("udp endpoint", () => {
  it.live("sends and receives datagrams with their source address, and counts them", () =>
    expectNoLeaks(Effect.gen(function*() {
      const a = yield* endpoint()
      const b = yield* endpoint()
      yield* run(a.udp)
      yield* run(b.udp)
      assert.strictEqual(NetAddress.formatHost(a.udp.address), "127.0.0.1")
      assert.notStrictEqual(a.udp.address.port, 0)

      assert.isTrue(a.udp.send(bytes(1, 2, 3), b.udp.address))
      const got = yield* b.next
      assert.deepStrictEqual([...got.payload], [1, 2, 3])
      assert.strictEqual(NetAddress.formatInet(got.from), NetAddress.formatInet(a.udp.address))
      // A plain Uint8Array, not a Buffer: slice() must copy.
      assert.isFalse(Buffer.isBuffer(got.payload))
      const copy = got.payload.slice()
      copy[0] = 99
      assert.strictEqual(got.payload[0], 1)

      b.udp.send(bytes(4), got.from)
      assert.deepStrictEqual([...(yield* a.next).payload], [4])
      assert.deepStrictEqual(
        { out: a.udp.stats().datagramsOut, bytesOut: a.udp.stats().bytesOut, in: a.udp.stats().datagramsIn },
        { out: 1, bytesOut: 3, in: 1 }
      )
      assert.strictEqual(b.udp.stats().bytesIn, 3)
    })))

  it.live("a full send queue drops the datagram and counts it; queued ones go out once the writer runs", () =>
    expectNoLeaks(Effect.gen(function*() {
      const sender = yield* endpoint({ sendQueue: 3 })
      const receiver = yield* endpoint()
      yield* run(receiver.udp)
      const accepted = [1, 2, 3, 4, 5].map((n) => sender.udp.send(bytes(n), receiver.udp.address))
      assert.deepStrictEqual(accepted, [true, true, true, false, false])
      assert.strictEqual(sender.udp.stats().sendQueueDrops, 2)

      yield* run(sender.udp)
      const got = [(yield* receiver.next).payload[0], (yield* receiver.next).payload[0], (yield* receiver.next).payload[0]]
      assert.deepStrictEqual(got, [1, 2, 3])
    })))

  it.live("a datagram the OS refuses is counted and the writer keeps going", () =>
    expectNoLeaks(Effect.gen(function*() {
      const sender = yield* endpoint()
      const receiver = yield* endpoint()
      yield* run(sender.udp)
      yield* run(receiver.udp)
      sender.udp.send(new Uint8Array(70_000), receiver.udp.address) // over the 65 507-byte UDP maximum: EMSGSIZE
      yield* Effect.sync(() => sender.udp.stats().sendErrors).pipe(
        Effect.repeat({ until: (errors) => errors === 1, schedule: Schedule.spaced("5 millis") }),
        Effect.timeout("5 seconds")
      )
      sender.udp.send(bytes(7), receiver.udp.address) // a later batch: the writer survived the error
      assert.deepStrictEqual([...(yield* receiver.next).payload], [7])
      assert.strictEqual(receiver.udp.stats().datagramsIn, 1)
    })))

  it.live("the socket closes with its scope: no handle is left and the port can be bound again", () =>
    expectNoLeaks(Effect.gen(function*() {
      const scope = yield* Scope.make()
      const first = yield* endpoint().pipe(Scope.provide(scope))
      yield* run(first.udp).pipe(Scope.provide(scope))
      const port = first.udp.address.port
      yield* Scope.close(scope, Exit.void)

      const again = yield* endpoint({ port })
      yield* run(again.udp)
      assert.strictEqual(again.udp.address.port, port)
      const other = yield* endpoint()
      yield* run(other.udp)
      other.udp.send(bytes(5), inetAddress("127.0.0.1", port)!)
      assert.deepStrictEqual([...(yield* again.next).payload], [5])
    })))
})

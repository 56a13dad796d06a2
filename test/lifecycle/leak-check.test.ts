import { assert, describe, expect, it } from "@effect/vitest"
import { Data, Effect, Exit, Fiber, FiberSet, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as dgram from "node:dgram"
import * as net from "node:net"
import { expectNoLeaks, LeakDetected } from "../support/leak-check.ts"

class Boom extends Data.TaggedError("Boom") {}

/** A TCP server listening on loopback, closed (callback awaited) when the scope closes. */
const tcpServer = Effect.acquireRelease(
  Effect.callback<net.Server>((resume) => {
    const server = net.createServer((socket) => socket.pipe(socket))
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
)

const tcpClient = (server: net.Server) =>
  Effect.acquireRelease(
    Effect.callback<net.Socket>((resume) => {
      const socket = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1")
      socket.once("connect", () => resume(Effect.succeed(socket)))
    }),
    (socket) => Effect.sync(() => socket.destroy())
  )

const udpSocket = Effect.acquireRelease(
  Effect.callback<dgram.Socket>((resume) => {
    const socket = dgram.createSocket("udp4")
    socket.bind(0, "127.0.0.1", () => resume(Effect.succeed(socket)))
  }),
  (socket) => Effect.callback<void>((resume) => void socket.close(() => resume(Effect.void)))
)

const leakOf = <A, E>(exit: Exit.Exit<A, E | LeakDetected>): LeakDetected => {
  assert.isTrue(Exit.isFailure(exit), "the leak check must fail")
  const reason = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
  assert.isTrue(reason?._tag === "Fail" && reason.error instanceof LeakDetected, "expected LeakDetected")
  return (reason as { readonly error: LeakDetected }).error
}

describe("expectNoLeaks passes components that clean up", () => {
  it.live("real sockets, a live-clock loop and a FiberSet, all released with the scope", () =>
    Effect.gen(function*() {
      const echoed = yield* expectNoLeaks(Effect.gen(function*() {
        const server = yield* tcpServer
        const client = yield* tcpClient(server)
        yield* udpSocket
        yield* Effect.forkScoped(Effect.forever(Effect.sleep("5 millis")))
        const set = yield* FiberSet.make()
        yield* FiberSet.run(set, Effect.never)
        client.write("ping")
        return yield* Effect.callback<string>((resume) => {
          client.once("data", (data) => resume(Effect.succeed(data.toString())))
        })
      }))
      expect(echoed).toBe("ping")
    }))

  it.effect("fibers sleeping on the TestClock", () =>
    Effect.gen(function*() {
      let ticks = 0
      yield* expectNoLeaks(Effect.gen(function*() {
        yield* Effect.forkScoped(Effect.forever(Effect.sleep("1 second").pipe(Effect.andThen(Effect.sync(() => ticks++)))))
        yield* TestClock.adjust("3 seconds")
      }))
      expect(ticks).toBe(3)
    }))

  it.effect("the component's own failure passes through when nothing leaked", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(expectNoLeaks(Effect.gen(function*() {
        yield* Effect.forkScoped(Effect.never)
        return yield* new Boom()
      })))
      expect(error).toBeInstanceOf(Boom)
    }))
})

describe("expectNoLeaks detects", () => {
  it.live("a TCP server that is never closed, naming the resource type", () =>
    Effect.gen(function*() {
      let leaked: net.Server | undefined
      const exit = yield* Effect.exit(expectNoLeaks(
        Effect.callback<void>((resume) => {
          leaked = net.createServer()
          leaked.listen(0, "127.0.0.1", () => resume(Effect.void))
        }),
        { settleMillis: 100 }
      ))
      yield* Effect.callback<void>((resume) => void leaked?.close(() => resume(Effect.void)))

      const leak = leakOf(exit)
      expect(leak.resources).toEqual({ TCPServerWrap: 1 })
      expect(leak.fibers).toBe(0)
      expect(leak.message).toBe(
        "leak after the component's scope closed (waited 100 ms): Node resources still open: TCPServerWrap +1"
      )
    }))

  it.live("a raw timer left running", () =>
    Effect.gen(function*() {
      let timer: NodeJS.Timeout | undefined
      const exit = yield* Effect.exit(expectNoLeaks(Effect.sync(() => {
        timer = setTimeout(() => undefined, 60_000)
      }), { settleMillis: 50 }))
      clearTimeout(timer)
      expect(leakOf(exit).resources).toEqual({ Timeout: 1 })
    }))

  it.live("ignoreResources leaves a named type out of the check", () =>
    Effect.gen(function*() {
      let timer: NodeJS.Timeout | undefined
      const exit = yield* Effect.exit(expectNoLeaks(Effect.sync(() => {
        timer = setTimeout(() => undefined, 60_000)
      }), { settleMillis: 50, ignoreResources: ["Timeout"] }))
      clearTimeout(timer)
      assert.isTrue(Exit.isSuccess(exit))
    }))

  // Each way of starting a fiber that can outlive the component's scope.
  const outliving: ReadonlyArray<[string, (outer: Scope.Scope) => Effect.Effect<Fiber.Fiber<never>, never, Scope.Scope>]> = [
    ["forkDetach", () => Effect.forkDetach(Effect.never)],
    ["forkChild (child of the test's fiber, not of the scope)", () => Effect.forkChild(Effect.never)],
    ["forkScoped into a longer-lived scope", (outer) => Effect.forkScoped(Effect.never).pipe(Scope.provide(outer))],
    ["forkIn a longer-lived scope", (outer) => Effect.forkIn(Effect.never, outer)],
    ["FiberSet.run on a set of a longer-lived scope", (outer) =>
      Effect.flatMap(FiberSet.make<never>().pipe(Scope.provide(outer)), (set) => FiberSet.run(set, Effect.never))]
  ]
  for (const [how, fork] of outliving) {
    it.effect(`a never-ending fiber started with ${how}`, () =>
      Effect.gen(function*() {
        const outer = yield* Scope.make()
        let fiber: Fiber.Fiber<never> | undefined
        const exit = yield* Effect.exit(expectNoLeaks(
          Effect.map(fork(outer), (forked) => void (fiber = forked)),
          { settleMillis: 50 }
        ))
        if (fiber !== undefined) yield* Fiber.interrupt(fiber)
        yield* Scope.close(outer, Exit.void)

        const leak = leakOf(exit)
        expect(leak.fibers).toBe(1)
        expect(leak.resources).toEqual({})
        expect(leak.message).toBe("leak after the component's scope closed (waited 50 ms): 1 fiber(s) still running")
      }))
  }
})

import { assert, describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Queue, type Scope } from "effect"
import * as fs from "node:fs"
import { makeIpcServer } from "../../src/ipc/server.ts"
import type { IpcServerOptions } from "../../src/ipc/server.ts"
import { localFileSystem } from "../../src/platform/file-system.ts"
import type { IpcMessage } from "../../src/protocol/ipc.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { makeLogCapture } from "../support/log-capture.ts"
import {
  connectClient,
  connectStalledClient,
  frame,
  isIpcClosed,
  makeTestDispatcher,
  tempSocketPath
} from "./ipc-test-kit.ts"

const QUEUE = 256
const HEALTH: IpcMessage = { cmd: "Health" }

/**
 * Runs `body` against a fresh server at a temp path inside `expectNoLeaks`, then asserts the socket file is gone.
 */
const withServer = <A, E>(
  options: Omit<IpcServerOptions, "path">,
  body: (
    server: Effect.Success<ReturnType<typeof makeIpcServer<never>>>,
    kit: Effect.Success<ReturnType<typeof makeTestDispatcher>>
  ) => Effect.Effect<A, E, Scope.Scope>,
  before?: (path: string) => void
) =>
  Effect.gen(function*() {
    const path = yield* tempSocketPath
    before?.(path)
    yield* expectNoLeaks(Effect.gen(function*() {
      const kit = yield* makeTestDispatcher(options.sendQueueCapacity ?? QUEUE)
      const server = yield* makeIpcServer({ ...options, path }, kit.dispatcher)
      return yield* body(server, kit)
    }).pipe(Effect.provide(localFileSystem)))
    expect(fs.existsSync(path)).toBe(false)
    expect(fs.readdirSync(path.slice(0, path.lastIndexOf("/")))).toEqual([])
  })

/** Floods a paused client with Info replies until its send queue is full and its writer is stuck. */
const stallClient = (path: string, kit: Effect.Success<ReturnType<typeof makeTestDispatcher>>) =>
  Effect.gen(function*() {
    const stalled = yield* connectStalledClient(path)
    const requests = new Uint8Array(600 * 5)
    for (let i = 0; i < 600; i++) requests.set(frame({ cmd: "Info" }), i * 5)
    yield* stalled.write(requests)
    yield* Deferred.await(kit.queueFull).pipe(Effect.timeout("10 seconds"))
    return stalled
  })

describe("IPC server on a Unix socket", () => {
  it.live("answers Health, replaces a stale file, and creates the socket with mode 0600", () =>
    withServer({}, (server) =>
      Effect.gen(function*() {
        const mode = fs.statSync(server.path).mode
        expect(fs.statSync(server.path).isSocket()).toBe(true)
        expect(mode & 0o777).toBe(0o600)
        expect(fs.readdirSync(server.path.slice(0, server.path.lastIndexOf("/")))).toEqual(["d.sock"]) // no staging dir left
        const client = yield* connectClient(server.path)
        const reply = yield* client.roundTrip(HEALTH)
        expect(reply).toEqual({ cmd: "HealthOK", json: { status: "ok" } })
        const stats = yield* server.stats
        expect(stats.clients).toBe(1)
        expect(stats.requestsByCommand).toEqual({ Health: 1 })
      }), (path) => fs.writeFileSync(path, "stale")))

  it.live("disconnects a client that never reads after the write deadline; others keep answering", () =>
    withServer({ writeTimeout: "1 second" }, (server, kit) =>
      Effect.gen(function*() {
        const healthy = yield* connectClient(server.path)
        expect((yield* healthy.roundTrip(HEALTH)).cmd).toBe("HealthOK")
        yield* stallClient(server.path, kit)

        // The stall is in progress: the stalled client's queue is full and its writer is blocked.
        expect((yield* healthy.roundTrip(HEALTH)).cmd).toBe("HealthOK")
        const during = yield* server.stats
        expect(during.writeTimeouts).toBe(0)
        expect(during.clients).toBe(2)
        for (let i = 0; i < 5; i++) expect((yield* healthy.roundTrip(HEALTH)).cmd).toBe("HealthOK")

        // The paused client never sees EOF (unread data is in its way), so watch the server side instead.
        const stalledId = yield* Queue.take(kit.closedClients).pipe(Effect.timeout("10 seconds"))
        const after = yield* server.stats
        expect(after.writeTimeouts).toBe(1)
        expect(after.sendQueueHighWater).toBe(QUEUE) // filled to its cap, never past it
        expect(after.clients).toBe(1)
        expect(after.requestsInFlight).toBe(0)
        expect(kit.state.clients.get(stalledId)?.queuedFrames()).toBe(0)
        expect((yield* healthy.roundTrip(HEALTH)).cmd).toBe("HealthOK")
      })))

  it.live("once the writer has exited, send fails fast with IpcClosed (blocked and later sends alike)", () =>
    withServer({ writeTimeout: "300 millis" }, (server, kit) =>
      Effect.gen(function*() {
        const stalled = yield* stallClient(server.path, kit)
        // Health is dispatched inline and blocks on the full queue until the writer gives up.
        yield* stalled.write(frame(HEALTH))
        const blockedId = yield* Deferred.await(kit.healthSendClosed).pipe(Effect.timeout("10 seconds"))
        expect(yield* Queue.take(kit.closedClients).pipe(Effect.timeout("10 seconds"))).toBe(blockedId)
        const client = kit.state.clients.get(blockedId)
        assert(client !== undefined)
        const exit = yield* client.send(HEALTH).pipe(Effect.timeout("1 second"), Effect.exit)
        expect(isIpcClosed(exit)).toBe(true)
        expect(client.queuedFrames()).toBe(0)
        expect((yield* server.stats).writeTimeouts).toBe(1)
      })))

  it.live("answers garbage with Error frames, closes on an oversize prefix, contains a dying handler", () => {
    const logs = makeLogCapture()
    return withServer({}, (server) =>
      Effect.gen(function*() {
        const good = yield* connectClient(server.path)
        const bad = yield* connectClient(server.path)

        yield* good.writeRaw(new Uint8Array([0, 0, 0, 1, 0xee]))
        const unknown = yield* good.next
        assert(unknown.cmd === "Error")
        expect(unknown.message).toContain("unknown command 0xEE")
        yield* good.writeRaw(new Uint8Array([0, 0, 0, 2, 0x21, 0x00])) // Health with a stray byte
        expect((yield* good.next).cmd).toBe("Error")
        const died = yield* good.roundTrip({ cmd: "Deregister" })
        assert(died.cmd === "Error")
        expect(died.message).toBe("Deregister: internal error")
        expect((yield* good.roundTrip(HEALTH)).cmd).toBe("HealthOK") // still usable

        yield* bad.writeRaw(new Uint8Array([0xff, 0xff, 0xff, 0xff]))
        const oversize = yield* bad.next
        assert(oversize.cmd === "Error")
        expect(oversize.message).toContain("exceeds")
        const end = yield* Effect.exit(bad.next)
        expect(Exit.isFailure(end) && Cause.squash(end.cause)).toSatisfy(Cause.isDone)

        expect((yield* good.roundTrip(HEALTH)).cmd).toBe("HealthOK")
        const stats = yield* server.stats
        expect(stats.badFrames).toBe(3)
        expect(stats.requestFailures).toBe(1)
        expect(logs.at("Error").map((entry) => entry.message)).toEqual([
          "IPC Deregister request of client 1 died; answered with an Error frame"
        ])
      })).pipe(Effect.provide(logs.layer))
  })

  it.live("past maxClients a new client is closed at once; the first ones keep working", () =>
    withServer({ maxClients: 2 }, (server) =>
      Effect.gen(function*() {
        const a = yield* connectClient(server.path)
        const b = yield* connectClient(server.path)
        expect((yield* a.roundTrip(HEALTH)).cmd).toBe("HealthOK")
        expect((yield* b.roundTrip(HEALTH)).cmd).toBe("HealthOK")

        const refused = yield* connectClient(server.path)
        const end = yield* Effect.exit(refused.next)
        expect(Exit.isFailure(end) && Cause.squash(end.cause)).toSatisfy(Cause.isDone)
        expect((yield* server.stats).clientsRefused).toBe(1)
        expect((yield* a.roundTrip(HEALTH)).cmd).toBe("HealthOK")
        expect((yield* b.roundTrip(HEALTH)).cmd).toBe("HealthOK")

      })))

  it.live("bounds in-flight requests per client; Health still answers inline with every slot parked", () =>
    withServer({ maxInFlight: 4 }, (server, kit) =>
      Effect.gen(function*() {
        kit.slowParked.target = 4
        const client = yield* connectClient(server.path)
        for (let i = 0; i < 4; i++) yield* client.request({ cmd: "RotateKey" })
        yield* Deferred.await(kit.slowParked.reached).pipe(Effect.timeout("5 seconds"))
        expect((yield* client.roundTrip(HEALTH)).cmd).toBe("HealthOK")
        expect((yield* server.stats).requestsInFlight).toBe(4)

        // The 5th slow request makes the read loop wait for a slot, so the Health behind it waits too.
        for (let i = 0; i < 3; i++) yield* client.request({ cmd: "RotateKey" })
        yield* client.request(HEALTH)
        yield* Deferred.succeed(kit.releaseSlow, undefined)
        const replies: Array<string> = []
        for (let i = 0; i < 8; i++) replies.push((yield* client.next).cmd)
        expect(replies.filter((cmd) => cmd === "RotateKeyOK")).toHaveLength(7)
        expect(replies.indexOf("HealthOK")).toBeGreaterThan(replies.indexOf("RotateKeyOK"))
        expect(kit.state.slowMax).toBe(4)
        const stats = yield* server.stats
        expect(stats.requestsByCommand).toEqual({ RotateKey: 7, Health: 2 })
      })))
})

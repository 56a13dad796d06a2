/**
 * systemd readiness notification through the real `systemd-notify` helper, received by a real Unix datagram
 * socket standing in for systemd (a python3 listener: Node cannot bind Unix datagram sockets; python3 is a test
 * dependency only). Failures never fail the caller and are logged once.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, References } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { makeSystemdNotifier } from "../../src/platform/systemd-notify.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { makeLogCapture } from "../support/log-capture.ts"

/** Receives datagrams on a Unix socket, closes any passed fds (systemd-notify's barrier), prints each as JSON. */
const LISTENER = `
import array, json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("listening", flush=True)
while True:
    data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            for fd in fds:
                import os
                os.close(fd)
    print(json.dumps(data.decode()), flush=True)
`

interface Listener {
  readonly socket: string
  readonly messages: ReadonlyArray<string>
  /** Waits for a message containing `text` (bounded). */
  readonly waitFor: (text: string) => Effect.Effect<string, Error>
}

const startListener = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "pf-sd-"))),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )
  const socket = path.join(dir, "notify")
  const messages: Array<string> = []
  const waiters = new Set<{ readonly text: string; readonly done: Deferred.Deferred<string> }>()
  const listening = yield* Deferred.make<void>()
  const exited = yield* Deferred.make<void>()
  yield* Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn("python3", ["-c", LISTENER, socket], { stdio: ["ignore", "pipe", "inherit"] })
      let partial = ""
      child.stdout.on("data", (chunk: Buffer) => {
        const lines = (partial + chunk.toString()).split("\n")
        partial = lines.pop() ?? ""
        for (const line of lines) {
          if (line === "listening") {
            Deferred.doneUnsafe(listening, Effect.void)
            continue
          }
          const message = JSON.parse(line) as string
          messages.push(message)
          for (const w of waiters) {
            if (message.includes(w.text)) {
              waiters.delete(w)
              Deferred.doneUnsafe(w.done, Effect.succeed(message))
            }
          }
        }
      })
      child.on("exit", () => Deferred.doneUnsafe(exited, Effect.void))
      return child
    }),
    (child) => Effect.sync(() => child.kill("SIGKILL")).pipe(Effect.andThen(Deferred.await(exited)))
  )
  yield* Deferred.await(listening).pipe(Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.fail(new Error("listener did not start")) }))
  const waitFor = (text: string) =>
    Effect.gen(function*() {
      const seen = messages.find((m) => m.includes(text))
      if (seen !== undefined) return seen
      const done = yield* Deferred.make<string>()
      waiters.add({ text, done })
      return yield* Deferred.await(done).pipe(
        Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.fail(new Error(`no ${text} in ${JSON.stringify(messages)}`)) })
      )
    })
  const listener: Listener = { socket, messages, waitFor }
  return listener
})

/** What systemd would act on: the barrier handshake is the helper's own business. */
const payloads = (listener: Listener) => listener.messages.filter((m) => m !== "BARRIER=1")

describe("systemd notify", () => {
  it.live("sends READY=1 with STATUS, STATUS, and STOPPING=1 to NOTIFY_SOCKET", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const listener = yield* startListener
      const notifier = makeSystemdNotifier({ env: { NOTIFY_SOCKET: listener.socket } })
      assert.isTrue(notifier.enabled)
      assert.isUndefined(notifier.watchdogIntervalMs)
      yield* expectNoLeaks(Effect.gen(function*() {
        yield* notifier.ready("serving on 127.0.0.1:4000\nregistered")
        yield* listener.waitFor("READY=1")
        yield* notifier.status("registered as node 7")
        yield* listener.waitFor("STATUS=registered")
        yield* notifier.stopping("shutting down")
        yield* listener.waitFor("STOPPING=1")
      }))
      expect(payloads(listener)).toEqual([
        "READY=1\nSTATUS=serving on 127.0.0.1:4000 registered",
        "STATUS=registered as node 7",
        "STOPPING=1\nSTATUS=shutting down"
      ])
      expect(logs.at("Warn")).toEqual([])
    }).pipe(Effect.scoped, Effect.provide(logs.layer))
  }, 30_000)

  it.live("without NOTIFY_SOCKET every call is a no-op (the helper is not even run)", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const notifier = makeSystemdNotifier({ env: { WATCHDOG_USEC: "1000000" }, command: "/nonexistent/systemd-notify" })
      assert.isFalse(notifier.enabled)
      assert.isUndefined(notifier.watchdogIntervalMs)
      yield* notifier.ready("x")
      yield* notifier.stopping()
      yield* notifier.watchdog(Effect.succeed(true))
      expect(logs.entries).toEqual([])
    }).pipe(Effect.provide(logs.layer))
  })

  it.live("a missing helper or a dead socket never fails the caller: one Warning, then Debug", () => {
    const logs = makeLogCapture()
    return Effect.gen(function*() {
      const missing = makeSystemdNotifier({ env: { NOTIFY_SOCKET: "/tmp/pf-none.sock" }, command: "/nonexistent/systemd-notify" })
      yield* missing.ready()
      yield* missing.stopping()
      const warnings = logs.at("Warn")
      expect(warnings.map((w) => w.message)).toEqual(["systemd notification failed; further failures are logged at Debug"])
      assert.include(String(warnings[0]?.annotations["hint"]), "Debian package systemd")
      expect(logs.at("Debug").length).toBe(1)

      // The real helper, but nobody listens on the socket.
      const dead = makeSystemdNotifier({ env: { NOTIFY_SOCKET: path.join(os.tmpdir(), `pf-dead-${process.pid}.sock`) } })
      yield* dead.ready()
      expect(logs.at("Warn").length).toBe(2)
      assert.match(String(logs.at("Warn")[1]?.annotations["detail"]), /systemd-notify exited 1/)
    }).pipe(Effect.provide(logs.layer), Effect.provideService(References.MinimumLogLevel, "Debug"))
  }, 30_000)

  it.live("WATCHDOG_USEC: pings WATCHDOG=1 at half the period while healthy; not for another PID", () =>
    Effect.gen(function*() {
      const listener = yield* startListener
      const other = makeSystemdNotifier({ env: { NOTIFY_SOCKET: listener.socket, WATCHDOG_USEC: "200000", WATCHDOG_PID: String(process.pid + 1) } })
      assert.isUndefined(other.watchdogIntervalMs)
      yield* other.watchdog(Effect.succeed(true)) // returns at once

      const notifier = makeSystemdNotifier({ env: { NOTIFY_SOCKET: listener.socket, WATCHDOG_USEC: "200000", WATCHDOG_PID: String(process.pid) } })
      expect(notifier.watchdogIntervalMs).toBe(100)
      yield* expectNoLeaks(Effect.gen(function*() {
        const pinging = yield* Effect.forkChild(notifier.watchdog(Effect.succeed(true)))
        yield* listener.waitFor("WATCHDOG=1")
        yield* Fiber.interrupt(pinging)
      }))
      assert.isTrue(payloads(listener).every((m) => m === "WATCHDOG=1"))
    }).pipe(Effect.scoped), 30_000)
})

/**
 * The daemon's event bus as an operator sees it: `pilot-daemon --webhook URL` POSTs its events to a real HTTP
 * server — `tunnel.established` when a peer's tunnel comes up, `daemon.shutting_down` first thing on SIGTERM,
 * before the process exits 0 — and Health counts what the webhook dropped or skipped.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect } from "effect"
import { startJsonReceiver } from "../support/http-receiver.ts"
import { ctl, okData, startCtlPair } from "../pilotctl/ctl-kit.ts"

interface Posted {
  readonly event: string
  readonly node_id: number
  readonly timestamp: string
  readonly data: Record<string, unknown>
}

/** A webhook receiver on loopback that records every event and lets a test wait for one by name. */
const startReceiver = Effect.gen(function*() {
  const received: Array<Posted> = []
  const waiters: Array<{ readonly name: string; readonly done: Deferred.Deferred<Posted> }> = []
  const { url } = yield* startJsonReceiver((body) => {
    const posted = body as Posted
    received.push(posted)
    for (const w of waiters) if (w.name === posted.event) Deferred.doneUnsafe(w.done, Effect.succeed(posted))
    return 204
  })
  const awaitEvent = (name: string) =>
    Effect.gen(function*() {
      const seen = received.find((p) => p.event === name)
      if (seen !== undefined) return seen
      const done = yield* Deferred.make<Posted>()
      waiters.push({ name, done })
      return yield* Deferred.await(done).pipe(Effect.timeout("20 seconds"))
    })
  return { url, received, awaitEvent }
})

describe("daemon events and the webhook", () => {
  it.live("tunnel.established on a new peer, daemon.shutting_down on SIGTERM, all POSTed to the webhook", () =>
    Effect.gen(function*() {
      const receiver = yield* startReceiver
      const { a, b } = yield* startCtlPair(["--webhook", receiver.url])

      const echoed = okData(yield* ctl("connect", String(b.nodeId), "7", "--message", "hi", "--json", "--socket", a.socket))
      assert.strictEqual(echoed["response"], "hi")
      const established = yield* receiver.awaitEvent("tunnel.established")
      assert.strictEqual(established.node_id, a.nodeId)
      assert.strictEqual(established.data["peer_node_id"], b.nodeId)
      assert.strictEqual(established.data["authenticated"], true)
      assert.match(established.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/)

      const health = okData(yield* ctl("health", "--json", "--socket", a.socket))
      assert.strictEqual(health["webhook_queue_dropped"], 0)
      assert.strictEqual(health["webhook_circuit_skips"], 0)

      assert.strictEqual(yield* a.proc.stop("SIGTERM"), 0)
      const shutting = receiver.received.find((p) => p.event === "daemon.shutting_down")
      assert.isDefined(shutting, "daemon.shutting_down was delivered before the process exited")
      assert.strictEqual(shutting?.data["known_peers"], 1)
      assert.strictEqual(yield* b.proc.stop("SIGTERM"), 0)
    }), 90_000)
})

/**
 * The webhook: its pure breaker/backoff core under fast-check, and the shell against a real local HTTP server that
 * answers, fails, hangs and recovers. Every shell test ends with the lifecycle check (no fiber, socket or server).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import fc from "fast-check"
import { makeEventBus } from "../../src/events/event-bus.ts"
import {
  admit,
  afterFailure,
  type Breaker,
  CLOSED,
  DEFAULT_WEBHOOK_POLICY,
  makeWebhook,
  record,
  retryDelayMs,
  rfc3339,
  type WebhookPolicy
} from "../../src/events/webhook.ts"
import { startJsonReceiver } from "../support/http-receiver.ts"
import { expectNoLeaks } from "../support/leak-check.ts"

// ---- pure core ------------------------------------------------------------------------------------------------

const policyArb = fc.record({
  maxAttempts: fc.integer({ min: 1, max: 6 }),
  baseDelayMs: fc.integer({ min: 1, max: 2000 }),
  maxDelayMs: fc.integer({ min: 1, max: 60_000 }),
  failureThreshold: fc.integer({ min: 1, max: 10 }),
  coolDownMs: fc.integer({ min: 1, max: 60_000 })
})

/** A script of requests: how long after the previous one, whether more callers ask at the same instant, the outcome. */
const stepArb = fc.record({ dt: fc.integer({ min: 0, max: 40_000 }), extraCallers: fc.integer({ min: 0, max: 3 }), ok: fc.boolean() })

describe("webhook core", () => {
  it("the breaker opens after exactly failureThreshold consecutive failures; one success closes it", () => {
    fc.assert(fc.property(policyArb, (policy) => {
      let b: Breaker = CLOSED
      for (let i = 1; i < policy.failureThreshold; i++) {
        b = record(b, false, 0, policy)
        assert.strictEqual(b.state, "closed")
      }
      b = record(b, false, 100, policy)
      assert.deepStrictEqual(b, { state: "open", until: 100 + policy.coolDownMs })
      assert.strictEqual(admit(b, 100 + policy.coolDownMs - 1).admission, "skip")
      assert.deepStrictEqual(record(b, true, 0, policy), CLOSED)
    }))
  })

  it("while open, exactly one probe per cool-down; everyone else is skipped until the probe's outcome", () => {
    fc.assert(fc.property(policyArb, fc.array(stepArb, { maxLength: 60 }), (policy, steps) => {
      let b: Breaker = CLOSED
      let now = 0
      for (const step of steps) {
        now += step.dt
        const first = admit(b, now)
        b = first.breaker
        // Callers arriving while this request is in flight.
        for (let i = 0; i < step.extraCallers; i++) {
          const other = admit(b, now)
          if (first.admission === "probe" || b.state !== "closed") assert.strictEqual(other.admission, "skip")
          b = other.breaker
        }
        if (first.admission === "skip") {
          assert.notStrictEqual(b.state, "closed")
          continue
        }
        const was = first.admission
        b = record(b, step.ok, now, policy)
        if (was === "probe") assert.strictEqual(b.state, step.ok ? "closed" : "open")
      }
    }), { numRuns: 500 })
  })

  it("backoff doubles from the base, is capped, and retries stop at maxAttempts or when the breaker is not closed", () => {
    fc.assert(fc.property(policyArb, fc.integer({ min: 1, max: 20 }), (policy, retry) => {
      const d = retryDelayMs(retry, policy)
      assert.isAtMost(d, policy.maxDelayMs)
      assert.isAtLeast(retryDelayMs(retry + 1, policy), d)
      if (retry === 1) assert.strictEqual(d, Math.min(policy.baseDelayMs, policy.maxDelayMs))
      const next = afterFailure(retry, CLOSED, policy)
      assert.strictEqual(next.action, retry >= policy.maxAttempts ? "give_up" : "retry")
      assert.strictEqual(afterFailure(retry, { state: "open", until: 0 }, policy).action, "give_up")
      assert.strictEqual(afterFailure(retry, { state: "half_open" }, policy).action, "give_up")
    }))
    assert.deepStrictEqual([1, 2, 3, 10].map((r) => retryDelayMs(r, DEFAULT_WEBHOOK_POLICY)), [1000, 2000, 4000, 30_000])
    assert.strictEqual(rfc3339(Date.UTC(2026, 10, 24, 6, 30, 1, 999)), "2026-11-24T06:30:01Z")
  })
})

// ---- shell against a real HTTP server --------------------------------------------------------------------------

type Mode = "ok" | "fail" | "hang"

const startServer = Effect.gen(function*() {
  const state = { mode: "ok" as Mode, failNext: 0, bodies: [] as Array<Record<string, unknown>>, requests: 0 }
  const { url } = yield* startJsonReceiver((body) => {
    state.requests++
    state.bodies.push(body as Record<string, unknown>)
    if (state.mode === "hang") return undefined
    const fail = state.mode === "fail" || state.failNext > 0
    if (state.failNext > 0) state.failNext--
    return fail ? 500 : 200
  })
  return { state, url }
})

const until = (what: string, condition: () => boolean) =>
  Effect.gen(function*() {
    const giveUp = Date.now() + 15_000
    while (!condition()) {
      if (Date.now() > giveUp) return yield* Effect.die(new Error(`timed out waiting for: ${what}`))
      yield* Effect.sleep("5 millis")
    }
  })

const fastPolicy = (extra: Partial<WebhookPolicy>): Partial<WebhookPolicy> => ({ baseDelayMs: 20, maxDelayMs: 100, ...extra })

describe("webhook delivery", () => {
  it.live("delivers {event, node_id, timestamp, data}; a failure is retried with backoff, then succeeds", () =>
    expectNoLeaks(Effect.gen(function*() {
      const server = yield* startServer
      const bus = yield* makeEventBus
      const hook = yield* makeWebhook({ url: server.url, nodeId: () => 42, bus, policy: fastPolicy({ maxAttempts: 3 }) })
      bus.publishUnsafe("message.received", { from: "0:0000.0000.0001", bytes: 5 })
      yield* until("delivered", () => hook.stats().webhook_delivered === 1)
      const body = server.state.bodies[0]!
      assert.strictEqual(body["event"], "message.received")
      assert.strictEqual(body["node_id"], 42)
      assert.match(body["timestamp"] as string, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/)
      assert.deepStrictEqual(body["data"], { from: "0:0000.0000.0001", bytes: 5 })

      server.state.failNext = 1
      bus.publishUnsafe("file.received", { n: 2 })
      yield* until("retried and delivered", () => hook.stats().webhook_delivered === 2)
      const stats = hook.stats()
      assert.strictEqual(stats.webhook_retries, 1)
      assert.strictEqual(stats.webhook_failed, 0)
      assert.strictEqual(stats.webhook_circuit_state, "closed")
      assert.strictEqual(server.state.requests, 3)
    })), 30_000)

  it.live("the breaker opens, skips while open, sends exactly one half-open probe, reopens, then closes on success", () =>
    expectNoLeaks(Effect.gen(function*() {
      const server = yield* startServer
      server.state.mode = "fail"
      const bus = yield* makeEventBus
      const coolDownMs = 300
      const hook = yield* makeWebhook({ url: server.url, nodeId: () => 1, bus, policy: fastPolicy({ maxAttempts: 1, failureThreshold: 2, coolDownMs }) })
      bus.publishUnsafe("e", { i: 1 })
      bus.publishUnsafe("e", { i: 2 })
      yield* until("opened", () => hook.stats().webhook_circuit_state === "open")
      for (let i = 3; i <= 5; i++) bus.publishUnsafe("e", { i })
      yield* until("skipped", () => hook.stats().webhook_circuit_skips === 3)
      assert.strictEqual(server.state.requests, 2)

      // After the cool-down: a burst of events yields ONE probe (failing), the rest are skipped.
      yield* Effect.sleep(coolDownMs + 50)
      for (let i = 6; i <= 9; i++) bus.publishUnsafe("e", { i })
      yield* until("burst handled", () => hook.stats().webhook_circuit_skips === 6 && hook.stats().webhook_queued === 0)
      assert.strictEqual(server.state.requests, 3)
      assert.deepStrictEqual(server.state.bodies[2]!["data"], { i: 6 })
      assert.strictEqual(hook.stats().webhook_circuit_state, "open")

      // The receiver recovers: the next probe succeeds and closes the breaker; later events flow.
      server.state.mode = "ok"
      yield* Effect.sleep(coolDownMs + 50)
      bus.publishUnsafe("e", { i: 10 })
      bus.publishUnsafe("e", { i: 11 })
      yield* until("delivered after recovery", () => hook.stats().webhook_delivered === 2)
      const stats = hook.stats()
      assert.strictEqual(stats.webhook_circuit_state, "closed")
      assert.strictEqual(stats.webhook_circuit_opens, 2)
      assert.strictEqual(server.state.requests, 5)
    })), 30_000)

  it.live("a hanging receiver times out per request; a full queue drops the newest (counted); shutdown is bounded", () =>
    expectNoLeaks(Effect.gen(function*() {
      const server = yield* startServer
      server.state.mode = "hang"
      const bus = yield* makeEventBus
      const hook = yield* makeWebhook({
        url: server.url,
        nodeId: () => 1,
        bus,
        queueCapacity: 3,
        requestTimeout: "200 millis",
        drainTimeout: "300 millis",
        policy: fastPolicy({ maxAttempts: 1, failureThreshold: 100 })
      })
      bus.publishUnsafe("e", { i: 0 })
      yield* until("first request in flight", () => server.state.requests === 1)
      for (let i = 1; i <= 10; i++) bus.publishUnsafe("e", { i })
      assert.strictEqual(hook.stats().webhook_queue_dropped, 7)
      yield* until("first request timed out", () => hook.stats().webhook_requests_failed >= 1)
      // The scope closes with events still queued: the drain is cut after 300 ms, not after 4 × 200 ms.
    })), 30_000)
})

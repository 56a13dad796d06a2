/**
 * The webhook subscriber (reference §11): every daemon event on the bus is POSTed as JSON
 * `{event, node_id, timestamp (UTC RFC3339), data}` to one URL.
 *
 * Why it is shaped this way: a webhook receiver is someone else's server, so it can be down, slow or flapping,
 * and none of that may reach the daemon. Hence:
 * - the queue is the webhook's own bus subscription (bounded, 1024 by default): publishing never waits for
 *   HTTP, and a full queue drops the newest event, counted as `webhook_queue_dropped`;
 * - one delivery fiber, one request at a time, each bounded by a 5 s timeout;
 * - a failed request is retried with exponential backoff (1 s, 2 s, … capped) a bounded number of times;
 * - a circuit breaker: after `failureThreshold` consecutive failed requests it opens; while open, events are
 *   skipped without a request (counted `webhook_circuit_skips`); after `coolDownMs` exactly ONE event goes out
 *   as a half-open probe (never retried); its success closes the breaker, its failure reopens it.
 * The decisions (admit, record, retry) are the pure functions below, with time as an input; the shell only
 * performs them. At scope close the webhook stops taking new events and delivers what is queued for at most
 * `drainTimeout` (one attempt each, no backoff), then stops.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Clock, Context, Deferred, Duration, Effect, Fiber, Layer } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import type { DaemonEvent, EventBus } from "./event-bus.ts"

// ---- pure core ------------------------------------------------------------------------------------------------

export interface WebhookPolicy {
  /** Requests per event at most (the first one included), ≥ 1. */
  readonly maxAttempts: number
  /** Delay before the first retry; doubles each retry. */
  readonly baseDelayMs: number
  readonly maxDelayMs: number
  /** Consecutive failed requests that open the breaker. */
  readonly failureThreshold: number
  /** How long the breaker stays open before one probe. */
  readonly coolDownMs: number
}

export const DEFAULT_WEBHOOK_POLICY: WebhookPolicy = {
  maxAttempts: 3,
  baseDelayMs: 1000,
  maxDelayMs: 30_000,
  failureThreshold: 5,
  coolDownMs: 30_000
}

export type Breaker =
  | { readonly state: "closed"; readonly failures: number }
  | { readonly state: "open"; readonly until: number }
  | { readonly state: "half_open" }

export const CLOSED: Breaker = { state: "closed", failures: 0 }

export type Admission = "send" | "probe" | "skip"

/** May a request go at `now`? Past the cool-down the first caller gets the one probe; nobody else until it ends. */
export const admit = (breaker: Breaker, now: number): { readonly admission: Admission; readonly breaker: Breaker } => {
  switch (breaker.state) {
    case "closed":
      return { admission: "send", breaker }
    case "open":
      return now >= breaker.until ? { admission: "probe", breaker: { state: "half_open" } } : { admission: "skip", breaker }
    case "half_open":
      return { admission: "skip", breaker }
  }
}

/** The breaker after a request's outcome at `now`. */
export const record = (breaker: Breaker, ok: boolean, now: number, policy: WebhookPolicy): Breaker => {
  if (ok) return CLOSED
  switch (breaker.state) {
    case "half_open":
      return { state: "open", until: now + policy.coolDownMs }
    case "closed": {
      const failures = breaker.failures + 1
      return failures >= policy.failureThreshold ? { state: "open", until: now + policy.coolDownMs } : { state: "closed", failures }
    }
    case "open":
      return breaker
  }
}

/** Delay before retry number `retry` (1-based): base × 2^(retry−1), capped. */
export const retryDelayMs = (retry: number, policy: WebhookPolicy): number =>
  Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, retry - 1))

export type AfterFailure = { readonly action: "retry"; readonly delayMs: number } | { readonly action: "give_up" }

/** After failed request number `attempt` (1-based) of an event: a breaker that is not closed ends the retries. */
export const afterFailure = (attempt: number, breaker: Breaker, policy: WebhookPolicy): AfterFailure =>
  breaker.state !== "closed" || attempt >= policy.maxAttempts ? { action: "give_up" } : { action: "retry", delayMs: retryDelayMs(attempt, policy) }

/** Go's RFC 3339 (`time.RFC3339`, UTC): seconds precision, `Z`. */
export const rfc3339 = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z")

export const webhookBody = (event: DaemonEvent, nodeId: number) => ({
  event: event.name,
  node_id: nodeId,
  timestamp: rfc3339(event.timestampMs),
  data: event.data
})

// ---- shell ----------------------------------------------------------------------------------------------------

export interface WebhookStats {
  readonly webhook_delivered: number
  /** Events given up on (retries exhausted, breaker opened, or unserialisable). */
  readonly webhook_failed: number
  readonly webhook_requests: number
  readonly webhook_requests_failed: number
  readonly webhook_retries: number
  readonly webhook_queue_dropped: number
  readonly webhook_circuit_skips: number
  readonly webhook_circuit_opens: number
  readonly webhook_circuit_state: Breaker["state"]
  readonly webhook_queued: number
}

export interface WebhookOptions {
  readonly url: string
  /** Our node id, read per event (0 before registration). */
  readonly nodeId: () => number
  readonly bus: EventBus
  readonly policy?: Partial<WebhookPolicy>
  readonly queueCapacity?: number
  readonly requestTimeout?: Duration.Input
  readonly drainTimeout?: Duration.Input
  /** Default: Node's `http`/`https` client, built in this scope. */
  readonly client?: HttpClient.HttpClient
}

export interface Webhook {
  readonly url: string
  readonly stats: () => WebhookStats
}

/** Subscribes to the bus and delivers until the scope closes (then drains, bounded). */
export const makeWebhook = Effect.fnUntraced(function*(options: WebhookOptions) {
  const policy: WebhookPolicy = { ...DEFAULT_WEBHOOK_POLICY, ...options.policy }
  const requestTimeout = options.requestTimeout ?? "5 seconds"
  const drainTimeout = options.drainTimeout ?? "3 seconds"
  const client = options.client ?? Context.get(yield* Layer.build(NodeHttpClient.layerNodeHttp), HttpClient.HttpClient)
  const subscription = yield* options.bus.subscribe({ capacity: options.queueCapacity ?? 1024 })
  const draining = yield* Deferred.make<void>()
  let breaker: Breaker = CLOSED
  const counters = { delivered: 0, failed: 0, requests: 0, requestsFailed: 0, retries: 0, circuitSkips: 0, circuitOpens: 0 }

  /** One request: true for a 2xx answer within the timeout. */
  const post = (body: string): Effect.Effect<boolean> =>
    client.execute(HttpClientRequest.post(options.url).pipe(HttpClientRequest.bodyText(body, "application/json"))).pipe(
      Effect.flatMap((response) => Effect.as(Effect.ignore(response.text), response.status >= 200 && response.status < 300)),
      Effect.timeout(requestTimeout),
      Effect.catchCause((cause) => Effect.as(Effect.logDebug("webhook request failed", cause), false))
    )

  const deliver = (event: DaemonEvent) =>
    Effect.gen(function*() {
      let body: string
      try {
        body = JSON.stringify(webhookBody(event, options.nodeId()))
      } catch {
        counters.failed++
        return
      }
      for (let attempt = 1;; attempt++) {
        const admitted = admit(breaker, yield* Clock.currentTimeMillis)
        breaker = admitted.breaker
        if (admitted.admission === "skip") {
          counters.circuitSkips++
          return
        }
        counters.requests++
        const ok = yield* post(body)
        const before = breaker.state
        breaker = record(breaker, ok, yield* Clock.currentTimeMillis, policy)
        if (breaker.state === "open" && before !== "open") counters.circuitOpens++
        if (ok) {
          counters.delivered++
          return
        }
        counters.requestsFailed++
        const next = afterFailure(attempt, breaker, policy)
        // Draining: one attempt per event, no backoff.
        if (next.action === "give_up" || Deferred.isDoneUnsafe(draining)) {
          counters.failed++
          return
        }
        counters.retries++
        yield* Effect.raceFirst(Effect.sleep(next.delayMs), Deferred.await(draining))
      }
    })

  const worker = yield* Effect.forkScoped(
    Effect.forever(Effect.flatMap(subscription.take, deliver)).pipe(Effect.catchTag("Done", () => Effect.void))
  )
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      yield* Deferred.succeed(draining, undefined)
      yield* subscription.close
      yield* Fiber.await(worker).pipe(Effect.timeout(drainTimeout), Effect.ignore)
      yield* Fiber.interrupt(worker)
    })
  )

  const webhook: Webhook = {
    url: options.url,
    stats: () => ({
      webhook_delivered: counters.delivered,
      webhook_failed: counters.failed,
      webhook_requests: counters.requests,
      webhook_requests_failed: counters.requestsFailed,
      webhook_retries: counters.retries,
      webhook_queue_dropped: subscription.dropped(),
      webhook_circuit_skips: counters.circuitSkips,
      webhook_circuit_opens: counters.circuitOpens,
      webhook_circuit_state: breaker.state,
      webhook_queued: subscription.size()
    })
  }
  return webhook
})

/** Zeroed counters, for status replies of a daemon without a webhook. */
export const NO_WEBHOOK_STATS: WebhookStats = {
  webhook_delivered: 0,
  webhook_failed: 0,
  webhook_requests: 0,
  webhook_requests_failed: 0,
  webhook_retries: 0,
  webhook_queue_dropped: 0,
  webhook_circuit_skips: 0,
  webhook_circuit_opens: 0,
  webhook_circuit_state: "closed",
  webhook_queued: 0
}

export const webhookTimeoutMillis = (input: Duration.Input): number => Duration.toMillis(Duration.fromInputUnsafe(input))

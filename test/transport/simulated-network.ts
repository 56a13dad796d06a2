/**
 * A deterministic, seeded network for tests of the transport (and later of the tunnel and lifecycle
 * layers): endpoints exchange opaque packets over links with loss, duplication, reordering, delay, jitter
 * and partitions, in virtual time driven by an event queue. No real timers and no clock: `run` pops events
 * in (time, insertion) order, so one seed always produces the same run, and a failure message that carries
 * `describe()` (seed and conditions) reproduces it.
 *
 * Usage: `attach` a handler per endpoint, `send` packets, `schedule` anything else (application actions,
 * an endpoint's timer) at a virtual time, then `run` until a condition holds or a bound is reached.
 */

/** mulberry32: a tiny, fast, well-distributed 32-bit PRNG; enough for test randomness. */
export const mulberry32 = (seed: number): (() => number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export class Rng {
  readonly #next: () => number
  constructor(seed: number) {
    this.#next = mulberry32(seed)
  }
  /** Uniform in [0, 1). */
  next(): number {
    return this.#next()
  }
  chance(probability: number): boolean {
    return probability > 0 && this.#next() < probability
  }
  /** Uniform integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.#next() * (max - min + 1))
  }
  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length)
    for (let i = 0; i < length; i++) out[i] = Math.floor(this.#next() * 256)
    return out
  }
}

export interface Partition {
  /** Virtual ms: every packet sent in [from, to) is dropped. */
  readonly from: number
  readonly to: number
}

export interface LinkConditions {
  /** Probability that a packet is dropped. */
  readonly loss: number
  /** Probability that a packet is delivered twice (the copy with its own delay). */
  readonly duplicate: number
  /** Probability that a packet is held back by `reorderDelayMs`, letting later ones overtake it. */
  readonly reorder: number
  /** One-way base delay, ms. */
  readonly delayMs: number
  /** Extra uniform delay in [0, jitterMs]. Links are FIFO: jitter alone never reorders (see `reorder`). */
  readonly jitterMs: number
  /** Extra delay of a reordered packet, ms (default 2 × delay + jitter + 1). */
  readonly reorderDelayMs?: number
  readonly partitions?: ReadonlyArray<Partition>
}

export const PERFECT_LINK: LinkConditions = { loss: 0, duplicate: 0, reorder: 0, delayMs: 10, jitterMs: 0 }

export interface NetworkStats {
  sent: number
  delivered: number
  lost: number
  duplicated: number
  reordered: number
  partitioned: number
}

export interface Scheduled {
  cancelled: boolean
}

interface QueuedEvent {
  readonly at: number
  readonly order: number
  readonly handle: Scheduled
  readonly run: () => void
}

export type RunOutcome = "done" | "quiet" | "time_limit"

export type TraceKind = "sent" | "lost" | "partitioned" | "delivered"

export interface NetworkOptions<P> {
  readonly seed: number
  /** Conditions for every link, or per direction. */
  readonly conditions: LinkConditions | ((from: string, to: string) => LinkConditions)
  /** Observer of every packet's fate, for debugging a failing seed. */
  readonly trace?: (kind: TraceKind, at: number, from: string, to: string, packet: P) => void
}

export class SimulatedNetwork<P> {
  readonly seed: number
  readonly stats: NetworkStats = { sent: 0, delivered: 0, lost: 0, duplicated: 0, reordered: 0, partitioned: 0 }
  readonly #rng: Rng
  readonly #conditions: (from: string, to: string) => LinkConditions
  readonly #describeConditions: string
  readonly #handlers = new Map<string, (packet: P, from: string) => void>()
  readonly #heap: Array<QueuedEvent> = []
  /** Latest in-order arrival time per directed link, to keep jittered links FIFO. */
  readonly #lastArrival = new Map<string, number>()
  #order = 0
  #now = 0

  readonly #trace: NetworkOptions<P>["trace"]

  constructor(options: NetworkOptions<P>) {
    this.#trace = options.trace
    this.seed = options.seed
    this.#rng = new Rng(options.seed)
    const conditions = options.conditions
    this.#conditions = typeof conditions === "function" ? conditions : () => conditions
    this.#describeConditions = typeof conditions === "function" ? "per-link" : JSON.stringify(conditions)
  }

  get now(): number {
    return this.#now
  }

  /** For failure messages: everything needed to replay the run. */
  describe(): string {
    return `seed=${this.seed} conditions=${this.#describeConditions} t=${this.#now}ms`
  }

  attach(endpoint: string, handler: (packet: P, from: string) => void): void {
    this.#handlers.set(endpoint, handler)
  }

  send(from: string, to: string, packet: P): void {
    this.stats.sent++
    this.#trace?.("sent", this.#now, from, to, packet)
    const link = this.#conditions(from, to)
    if (link.partitions?.some((p) => this.#now >= p.from && this.#now < p.to)) {
      this.stats.partitioned++
      this.#trace?.("partitioned", this.#now, from, to, packet)
      return
    }
    if (this.#rng.chance(link.loss)) {
      this.stats.lost++
      this.#trace?.("lost", this.#now, from, to, packet)
      return
    }
    const copies = this.#rng.chance(link.duplicate) ? 2 : 1
    if (copies === 2) this.stats.duplicated++
    const key = `${from}>${to}`
    for (let i = 0; i < copies; i++) {
      let arrival = this.#now + link.delayMs + this.#rng.next() * link.jitterMs
      if (this.#rng.chance(link.reorder)) {
        this.stats.reordered++
        arrival += link.reorderDelayMs ?? 2 * link.delayMs + link.jitterMs + 1
      } else {
        arrival = Math.max(arrival, this.#lastArrival.get(key) ?? 0)
        this.#lastArrival.set(key, arrival)
      }
      this.schedule(arrival, () => {
        const handler = this.#handlers.get(to)
        if (handler === undefined) return
        this.stats.delivered++
        this.#trace?.("delivered", this.#now, from, to, packet)
        handler(packet, from)
      })
    }
  }

  /** Runs `action` at virtual time `at` (never in the past). */
  schedule(at: number, action: () => void): Scheduled {
    const handle: Scheduled = { cancelled: false }
    this.#push({ at: Math.max(at, this.#now), order: this.#order++, handle, run: action })
    return handle
  }

  /**
   * Processes events until `done()` holds ("done"), nothing is left to do ("quiet"), or virtual time would
   * pass `until` ("time_limit").
   */
  run(done: () => boolean, until: number): RunOutcome {
    while (!done()) {
      const next = this.#pop()
      if (next === undefined) return "quiet"
      if (next.at > until) {
        this.#push(next)
        return "time_limit"
      }
      this.#now = next.at
      if (!next.handle.cancelled) next.run()
    }
    return "done"
  }

  #before(a: QueuedEvent, b: QueuedEvent): boolean {
    return a.at < b.at || (a.at === b.at && a.order < b.order)
  }

  #push(event: QueuedEvent): void {
    const heap = this.#heap
    heap.push(event)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.#before(heap[i] as QueuedEvent, heap[parent] as QueuedEvent)) break
      ;[heap[i], heap[parent]] = [heap[parent] as QueuedEvent, heap[i] as QueuedEvent]
      i = parent
    }
  }

  #pop(): QueuedEvent | undefined {
    const heap = this.#heap
    const top = heap[0]
    const last = heap.pop()
    if (top === undefined || last === undefined || heap.length === 0) return top
    heap[0] = last
    let i = 0
    while (true) {
      const left = 2 * i + 1
      const right = left + 1
      let smallest = i
      if (left < heap.length && this.#before(heap[left] as QueuedEvent, heap[smallest] as QueuedEvent)) smallest = left
      if (right < heap.length && this.#before(heap[right] as QueuedEvent, heap[smallest] as QueuedEvent)) smallest = right
      if (smallest === i) break
      ;[heap[i], heap[smallest]] = [heap[smallest] as QueuedEvent, heap[i] as QueuedEvent]
      i = smallest
    }
    return top
  }
}

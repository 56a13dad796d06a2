/**
 * Keyed token buckets with a bounded key set: the rate limiter for anything a remote party can trigger
 * (registrations per source IP, key exchanges per IP, SYNs per source, relay frames per sender…).
 *
 * Pure: time is an input (`nowMs`), there are no timers. Memory is bounded by `maxKeys`. When the key table
 * is full, buckets that have refilled completely are pruned first (they carry no information: a fresh
 * bucket would behave the same); if none has, the least recently used key is evicted. Evicting never refuses
 * a newcomer outright — the Go beacon's never-pruned map permanently refused every new peer once 4096 IPs had
 * been seen (reference §14.11) — and the worst an attacker gains by churning keys is a fresh bucket for one key,
 * which is still limited by `burst`.
 */

export interface TokenBucketConfig {
  /** Tokens a new (or long-idle) key starts with: the burst it may spend at once. */
  readonly burst: number
  /** Tokens regained per second. */
  readonly perSecond: number
  /** Most keys tracked at once. */
  readonly maxKeys: number
}

interface Bucket {
  tokens: number
  updatedMs: number
}

export class TokenBuckets<K> {
  readonly #config: TokenBucketConfig
  // A Map iterates in insertion order; re-inserting on use keeps it ordered least → most recently used.
  readonly #buckets = new Map<K, Bucket>()
  #evictions = 0

  constructor(config: TokenBucketConfig) {
    if (!(config.burst >= 1 && config.perSecond > 0 && config.maxKeys >= 1)) {
      throw new RangeError(`invalid token bucket config ${JSON.stringify(config)}`)
    }
    this.#config = config
  }

  /** Spends one token of `key` if it has one. Returns whether the action is allowed. */
  take(key: K, nowMs: number): boolean {
    const bucket = this.#refilled(key, nowMs)
    if (bucket.tokens < 1) return false
    bucket.tokens -= 1
    return true
  }

  /** Keys currently tracked (bounded by `maxKeys`). */
  get size(): number {
    return this.#buckets.size
  }

  /** Keys dropped to stay within `maxKeys` (a counter for metrics). */
  get evictions(): number {
    return this.#evictions
  }

  /** Forgets buckets that have refilled completely; a periodic sweep keeps an idle table small. */
  prune(nowMs: number): void {
    for (const [key, bucket] of this.#buckets) {
      if (this.#level(bucket, nowMs) >= this.#config.burst) this.#buckets.delete(key)
    }
  }

  #level(bucket: Bucket, nowMs: number): number {
    const elapsedMs = Math.max(0, nowMs - bucket.updatedMs)
    return Math.min(this.#config.burst, bucket.tokens + (elapsedMs * this.#config.perSecond) / 1000)
  }

  #refilled(key: K, nowMs: number): Bucket {
    const existing = this.#buckets.get(key)
    if (existing !== undefined) {
      existing.tokens = this.#level(existing, nowMs)
      existing.updatedMs = Math.max(existing.updatedMs, nowMs)
      this.#buckets.delete(key)
      this.#buckets.set(key, existing)
      return existing
    }
    if (this.#buckets.size >= this.#config.maxKeys) this.#makeRoom(nowMs)
    const fresh: Bucket = { tokens: this.#config.burst, updatedMs: nowMs }
    this.#buckets.set(key, fresh)
    return fresh
  }

  #makeRoom(nowMs: number): void {
    this.prune(nowMs)
    if (this.#buckets.size < this.#config.maxKeys) return
    const oldest = this.#buckets.keys().next()
    if (!oldest.done) {
      this.#buckets.delete(oldest.value)
      this.#evictions++
    }
  }
}

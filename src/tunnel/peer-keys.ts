/**
 * The registry-key cache behind PILA authentication (reference §4.1): which Ed25519 key the registry holds
 * for a claimed node ID, so that a PILA is verified against the registry's key and never against the copy
 * the frame carries.
 *
 * Pure structure: no I/O, no clock (`nowMs` is an input). The shell does the registry `lookup`; this module
 * says when to do one and what to conclude from it:
 *
 * - `forPila(node, frameKey)`: `UseCached` (verify the signature against the cached key) · `Fetch` (nothing
 *   cached: look it up, then call `fetched`) · `Refetch` (the cached key differs from the frame's: the peer
 *   may have rotated its key, so the entry is dropped and looked up once more, then `fetched`) · `Reject`
 *   (the registry had no key for the node within the last 3 s: the negative cache spares the registry a
 *   lookup per frame from an unknown or bogus node ID).
 * - `fetched(node, frameKey, registryKey)` records the lookup's outcome and answers `Verify` or `Reject`.
 *   A key that still differs from the frame's after a fresh lookup is a mismatch, never a second refetch.
 * - `knowledge(node)` / `record(node, key)` serve the PILK rule: a PILK from a node the registry knows is
 *   answered with our PILA instead of being accepted.
 *
 * "One refetch on mismatch" is also bounded in time: an entry fetched less than `MISMATCH_REFETCH_MIN_AGE_MS`
 * ago is fresh, so a mismatch against it is rejected without a lookup. Otherwise anyone could make us query
 * the registry once per forged PILA by putting a random identity key in it.
 *
 * Bounds: at most `REGISTRY_KEY_CACHE_SIZE` positive entries (least recently used evicted) and at most
 * `NEGATIVE_KEY_CACHE_SIZE` negative ones (oldest evicted: with one TTL for all, oldest = closest to expiry).
 * Stored keys are copies, never views of a receive buffer that is about to be reused.
 */
import { bytesEqual } from "../crypto/bytes.ts"

export const REGISTRY_KEY_CACHE_SIZE = 4096
export const NEGATIVE_KEY_CACHE_TTL_MS = 3_000
export const NEGATIVE_KEY_CACHE_SIZE = 4096
export const MISMATCH_REFETCH_MIN_AGE_MS = 3_000

export type RegistryKeyRejection = "registry_key_unavailable" | "registry_key_mismatch"

export type PilaKeyDecision =
  | { readonly _tag: "UseCached"; readonly key: Uint8Array }
  | { readonly _tag: "Fetch" }
  | { readonly _tag: "Refetch" }
  | { readonly _tag: "Reject"; readonly reason: RegistryKeyRejection }

export type FetchedKeyDecision =
  | { readonly _tag: "Verify"; readonly key: Uint8Array }
  | { readonly _tag: "Reject"; readonly reason: RegistryKeyRejection }

/** What we know about a node's registry key without asking: `Fetch` means ask, then `record`. */
export type KeyKnowledge =
  | { readonly _tag: "Known"; readonly key: Uint8Array }
  | { readonly _tag: "Unknown" }
  | { readonly _tag: "Fetch" }

interface CachedKey {
  readonly key: Uint8Array
  readonly fetchedAtMs: number
}

export interface RegistryKeyCacheLimits {
  readonly maxKeys: number
  readonly maxNegative: number
}

const FETCH: PilaKeyDecision & KeyKnowledge = { _tag: "Fetch" }
const REFETCH: PilaKeyDecision = { _tag: "Refetch" }
const UNKNOWN: KeyKnowledge = { _tag: "Unknown" }
const UNAVAILABLE = { _tag: "Reject", reason: "registry_key_unavailable" } as const
const MISMATCH = { _tag: "Reject", reason: "registry_key_mismatch" } as const

export class RegistryKeyCache {
  readonly #limits: RegistryKeyCacheLimits
  // Both maps iterate in insertion order; re-inserting on use keeps `#keys` least → most recently used.
  readonly #keys = new Map<number, CachedKey>()
  /** node → when its negative entry expires. */
  readonly #negative = new Map<number, number>()

  constructor(limits: RegistryKeyCacheLimits = { maxKeys: REGISTRY_KEY_CACHE_SIZE, maxNegative: NEGATIVE_KEY_CACHE_SIZE }) {
    if (!(limits.maxKeys >= 1 && limits.maxNegative >= 1)) {
      throw new RangeError(`invalid registry key cache limits ${JSON.stringify(limits)}`)
    }
    this.#limits = limits
  }

  /** Positive entries held (at most `maxKeys`). */
  get size(): number {
    return this.#keys.size
  }

  /** Negative entries held, expired ones included until they are looked at or evicted (at most `maxNegative`). */
  get negativeSize(): number {
    return this.#negative.size
  }

  /** How to authenticate a PILA from `nodeId` whose frame carries the identity key `frameKey`. */
  forPila(nodeId: number, frameKey: Uint8Array, nowMs: number): PilaKeyDecision {
    const cached = this.#touch(nodeId)
    if (cached !== undefined) {
      if (bytesEqual(cached.key, frameKey)) return { _tag: "UseCached", key: cached.key }
      if (nowMs - cached.fetchedAtMs < MISMATCH_REFETCH_MIN_AGE_MS) return MISMATCH
      this.#keys.delete(nodeId)
      return REFETCH
    }
    return this.#isKnownMissing(nodeId, nowMs) ? UNAVAILABLE : FETCH
  }

  /** Records a lookup made for a PILA (`undefined`: no key, or the registry did not answer) and concludes. */
  fetched(nodeId: number, frameKey: Uint8Array, registryKey: Uint8Array | undefined, nowMs: number): FetchedKeyDecision {
    this.record(nodeId, registryKey, nowMs)
    if (registryKey === undefined) return UNAVAILABLE
    const stored = this.#keys.get(nodeId)!.key
    return bytesEqual(stored, frameKey) ? { _tag: "Verify", key: stored } : MISMATCH
  }

  /** Whether the registry holds a key for `nodeId`, as far as the cache knows. */
  knowledge(nodeId: number, nowMs: number): KeyKnowledge {
    const cached = this.#touch(nodeId)
    if (cached !== undefined) return { _tag: "Known", key: cached.key }
    return this.#isKnownMissing(nodeId, nowMs) ? UNKNOWN : FETCH
  }

  /** Stores the outcome of a registry lookup for `nodeId`: its key, or `undefined` for none/unavailable. */
  record(nodeId: number, registryKey: Uint8Array | undefined, nowMs: number): void {
    this.#keys.delete(nodeId)
    this.#negative.delete(nodeId)
    if (registryKey === undefined) {
      if (this.#negative.size >= this.#limits.maxNegative) this.#negative.delete(this.#negative.keys().next().value!)
      this.#negative.set(nodeId, nowMs + NEGATIVE_KEY_CACHE_TTL_MS)
    } else {
      if (this.#keys.size >= this.#limits.maxKeys) this.#keys.delete(this.#keys.keys().next().value!)
      this.#keys.set(nodeId, { key: registryKey.slice(), fetchedAtMs: nowMs })
    }
  }

  /** Forgets everything about `nodeId` (peer removal: a recycled node ID must not inherit it, §14.11). */
  forget(nodeId: number): void {
    this.#keys.delete(nodeId)
    this.#negative.delete(nodeId)
  }

  #touch(nodeId: number): CachedKey | undefined {
    const cached = this.#keys.get(nodeId)
    if (cached !== undefined) {
      this.#keys.delete(nodeId)
      this.#keys.set(nodeId, cached)
    }
    return cached
  }

  #isKnownMissing(nodeId: number, nowMs: number): boolean {
    const expiresAtMs = this.#negative.get(nodeId)
    if (expiresAtMs === undefined) return false
    if (nowMs < expiresAtMs) return true
    this.#negative.delete(nodeId)
    return false
  }
}

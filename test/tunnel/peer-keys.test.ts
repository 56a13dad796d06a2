/**
 * The registry-key cache behind PILA authentication (reference §4.1): positive LRU cache, 3 s negative
 * cache, one refetch on a mismatch (the peer may have rotated), never a refetch per forged frame.
 */
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  MISMATCH_REFETCH_MIN_AGE_MS,
  NEGATIVE_KEY_CACHE_TTL_MS,
  RegistryKeyCache
} from "../../src/tunnel/peer-keys.ts"

const ID_OLD = new Uint8Array(32).fill(0x11)
const ID_NEW = new Uint8Array(32).fill(0x22)
const FORGED = new Uint8Array(32).fill(0x33)

describe("RegistryKeyCache", () => {
  it("nothing cached: fetch, then verify against the registry's key and serve it from the cache", () => {
    const cache = new RegistryKeyCache()
    expect(cache.forPila(5, ID_OLD, 0)).toEqual({ _tag: "Fetch" })
    expect(cache.fetched(5, ID_OLD, ID_OLD, 0)).toEqual({ _tag: "Verify", key: ID_OLD })
    expect(cache.forPila(5, ID_OLD, 10)).toEqual({ _tag: "UseCached", key: ID_OLD })
  })

  it("keeps its own copy of a fetched key", () => {
    const cache = new RegistryKeyCache()
    const fetched = ID_OLD.slice()
    cache.fetched(5, ID_OLD, fetched, 0)
    fetched.fill(0)
    expect(cache.forPila(5, ID_OLD, 10)).toEqual({ _tag: "UseCached", key: ID_OLD })
  })

  it("the registry has no key: rejected, and for 3 s rejected without asking again", () => {
    const cache = new RegistryKeyCache()
    expect(cache.forPila(5, ID_OLD, 0)).toEqual({ _tag: "Fetch" })
    expect(cache.fetched(5, ID_OLD, undefined, 0)).toEqual({ _tag: "Reject", reason: "registry_key_unavailable" })
    expect(cache.forPila(5, ID_OLD, NEGATIVE_KEY_CACHE_TTL_MS - 1)).toEqual({
      _tag: "Reject",
      reason: "registry_key_unavailable"
    })
    expect(cache.forPila(5, ID_OLD, NEGATIVE_KEY_CACHE_TTL_MS)).toEqual({ _tag: "Fetch" })
    expect(cache.negativeSize).toBe(0)
  })

  it("a key that differs from a cached one: the peer may have rotated, so refetch once and accept the new key", () => {
    const cache = new RegistryKeyCache()
    cache.fetched(5, ID_OLD, ID_OLD, 0)
    const later = MISMATCH_REFETCH_MIN_AGE_MS
    expect(cache.forPila(5, ID_NEW, later)).toEqual({ _tag: "Refetch" })
    expect(cache.size).toBe(0) // the stale entry is gone whatever the refetch says
    expect(cache.fetched(5, ID_NEW, ID_NEW, later)).toEqual({ _tag: "Verify", key: ID_NEW })
    expect(cache.forPila(5, ID_NEW, later + 1)).toEqual({ _tag: "UseCached", key: ID_NEW })
  })

  it("a mismatch that the refetch confirms is rejected, and forged keys cost no further lookups for a while", () => {
    const cache = new RegistryKeyCache()
    cache.fetched(5, ID_OLD, ID_OLD, 0)
    expect(cache.forPila(5, FORGED, 10_000)).toEqual({ _tag: "Refetch" })
    expect(cache.fetched(5, FORGED, ID_OLD, 10_000)).toEqual({ _tag: "Reject", reason: "registry_key_mismatch" })
    for (let at = 10_000; at < 10_000 + MISMATCH_REFETCH_MIN_AGE_MS; at += 500) {
      expect(cache.forPila(5, FORGED, at)).toEqual({ _tag: "Reject", reason: "registry_key_mismatch" })
    }
    expect(cache.forPila(5, ID_OLD, 10_500)).toEqual({ _tag: "UseCached", key: ID_OLD })
    expect(cache.forPila(5, FORGED, 10_000 + MISMATCH_REFETCH_MIN_AGE_MS)).toEqual({ _tag: "Refetch" })
  })

  it("PILK rule: known / unknown / ask, from the same cache", () => {
    const cache = new RegistryKeyCache()
    expect(cache.knowledge(8, 0)).toEqual({ _tag: "Fetch" })
    cache.record(8, undefined, 0)
    expect(cache.knowledge(8, 1)).toEqual({ _tag: "Unknown" })
    cache.record(8, ID_OLD, 2)
    expect(cache.knowledge(8, 3)).toEqual({ _tag: "Known", key: ID_OLD })
  })

  it("forget wipes both caches for the node (a recycled node ID starts fresh)", () => {
    const cache = new RegistryKeyCache()
    cache.record(1, ID_OLD, 0)
    cache.record(2, undefined, 0)
    cache.forget(1)
    cache.forget(2)
    expect(cache.knowledge(1, 1)).toEqual({ _tag: "Fetch" })
    expect(cache.knowledge(2, 1)).toEqual({ _tag: "Fetch" })
    expect(cache.size + cache.negativeSize).toBe(0)
  })

  it("evicts the least recently used key when full", () => {
    const cache = new RegistryKeyCache({ maxKeys: 2, maxNegative: 2 })
    cache.record(1, ID_OLD, 0)
    cache.record(2, ID_OLD, 0)
    cache.knowledge(1, 1) // 1 is now more recent than 2
    cache.record(3, ID_OLD, 2)
    expect(cache.knowledge(2, 3)).toEqual({ _tag: "Fetch" })
    expect(cache.knowledge(1, 3)).toEqual({ _tag: "Known", key: ID_OLD })
  })

  it("property: both caches stay within their bounds under any sequence of lookups", () => {
    const limits = { maxKeys: 3, maxNegative: 2 }
    const op = fc.record({
      node: fc.integer({ min: 1, max: 8 }),
      dtMs: fc.integer({ min: 0, max: 4_000 }),
      kind: fc.constantFrom("pila", "pilk", "found", "missing", "forget"),
      key: fc.constantFrom(ID_OLD, ID_NEW)
    })
    fc.assert(
      fc.property(fc.array(op, { maxLength: 100 }), (ops) => {
        const cache = new RegistryKeyCache(limits)
        let nowMs = 0
        for (const { dtMs, key, kind, node } of ops) {
          nowMs += dtMs
          if (kind === "pila") cache.forPila(node, key, nowMs)
          else if (kind === "pilk") cache.knowledge(node, nowMs)
          else if (kind === "found") cache.fetched(node, key, key, nowMs)
          else if (kind === "missing") cache.fetched(node, key, undefined, nowMs)
          else cache.forget(node)
          expect(cache.size).toBeLessThanOrEqual(limits.maxKeys)
          expect(cache.negativeSize).toBeLessThanOrEqual(limits.maxNegative)
        }
      }),
      { numRuns: 300 }
    )
  })
})

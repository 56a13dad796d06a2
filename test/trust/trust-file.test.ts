import { assert, describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import { decodeTrustFile, encodeTrustFile, parseRfc3339 } from "../../src/trust/trust-file.ts"
import { emptyTrustState, type TrustState } from "../../src/trust/trust-state.ts"
import { keyOf } from "./fixtures.ts"

const T0 = Date.parse("2025-03-01T12:00:00.000Z")

const sample: TrustState = {
  trusted: new Map([
    [9, { node_id: 9, public_key: keyOf(9), approved_at: T0 - 5000, mutual: true, network: 3 }],
    [2, { node_id: 2, public_key: keyOf(2), approved_at: T0 - 1, mutual: false }]
  ]),
  pending: new Map([
    [4, { node_id: 4, public_key: keyOf(4), justification: "please ✓", received_at: T0 - 10, source: 77 }],
    [5, { node_id: 5, received_at: T0 }]
  ]),
  outgoing: new Map([[6, T0 + 1000]]),
  cooldowns: new Map([[8, T0 + 60_000], [10, T0 - 1]])
}

const decodeOk = (text: string, now = T0) => {
  const result = decodeTrustFile(text, now)
  assert.isTrue(Result.isSuccess(result))
  return (result as Result.Success<{ state: TrustState; skipped: number }, string>).success
}

describe("trust.json", () => {
  it("is written in the reference's format: 2-space indent, RFC 3339, only live cooldowns, sorted", () => {
    expect(JSON.parse(encodeTrustFile(sample, T0))).toEqual({
      trusted: [
        { node_id: 2, public_key: keyOf(2), approved_at: "2025-03-01T11:59:59.999Z", mutual: false },
        { node_id: 9, public_key: keyOf(9), approved_at: "2025-03-01T11:59:55.000Z", mutual: true, network: 3 }
      ],
      pending: [
        { node_id: 4, public_key: keyOf(4), justification: "please ✓", received_at: "2025-03-01T11:59:59.990Z", source: 77 },
        { node_id: 5, received_at: "2025-03-01T12:00:00.000Z" }
      ],
      revoked: [{ node_id: 8, until: "2025-03-01T12:01:00.000Z" }]
    })
    expect(encodeTrustFile(emptyTrustState, T0)).toBe(`{\n  "trusted": [],\n  "pending": [],\n  "revoked": []\n}`)
    expect(Object.keys(JSON.parse(encodeTrustFile(sample, T0)).trusted[1])).toEqual(
      ["node_id", "public_key", "approved_at", "mutual", "network"]
    )
  })

  it("round-trips: decoding the file gives the persisted state (no outgoing, no expired cooldown)", () => {
    const { skipped, state } = decodeOk(encodeTrustFile(sample, T0))
    assert.strictEqual(skipped, 0)
    expect(state.trusted).toEqual(sample.trusted)
    expect(state.pending).toEqual(sample.pending)
    expect(state.outgoing).toEqual(new Map())
    expect(state.cooldowns).toEqual(new Map([[8, T0 + 60_000]]))
    expect(encodeTrustFile(state, T0)).toBe(encodeTrustFile(sample, T0))
  })

  it("reads Go's times (nanoseconds, offsets)", () => {
    assert.strictEqual(parseRfc3339("2025-03-01T14:00:00.123456789+02:00"), T0 + 123)
    assert.strictEqual(parseRfc3339("2025-03-01T12:00:00Z"), T0)
    assert.isUndefined(parseRfc3339("2025-03-01 12:00:00"))
    assert.isUndefined(parseRfc3339("2025-13-01T12:00:00Z"))
  })

  it("skips malformed entries and counts them, keeping the rest", () => {
    const good = { node_id: 1, public_key: keyOf(1), approved_at: "2025-03-01T12:00:00Z", mutual: true }
    const text = JSON.stringify({
      trusted: [
        good,
        { ...good, node_id: 2, public_key: "short" },
        { ...good, node_id: -1 },
        { ...good, node_id: 3, approved_at: "yesterday" },
        { ...good, node_id: 4, mutual: "yes" },
        { ...good }, // duplicate
        "junk",
        null
      ],
      pending: [{ node_id: 5, received_at: "2025-03-01T12:00:00Z" }, { node_id: 6 }],
      revoked: { not: "a list" },
      extra: true
    })
    const { skipped, state } = decodeOk(text)
    assert.strictEqual(skipped, 7 + 1 + 1)
    expect([...state.trusted.keys()]).toEqual([1])
    expect([...state.pending.keys()]).toEqual([5])
    assert.strictEqual(state.cooldowns.size, 0)
  })

  it("drops expired pending requests and cooldowns on load; a missing list is empty", () => {
    const text = JSON.stringify({
      pending: [{ node_id: 5, received_at: "2025-01-01T00:00:00Z" }],
      revoked: [{ node_id: 8, until: "2025-03-01T11:00:00Z" }]
    })
    const { skipped, state } = decodeOk(text)
    assert.strictEqual(skipped, 0)
    expect(state).toEqual(emptyTrustState)
  })

  it("a file that is not a JSON object is unparseable", () => {
    for (const text of ["", "{", "[]", "null", "42", "\"trusted\""]) {
      assert.isTrue(Result.isFailure(decodeTrustFile(text, T0)), JSON.stringify(text))
    }
  })
})

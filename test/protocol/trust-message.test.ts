import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import {
  checkTrustTimestamp,
  decodeTrustMessage,
  encodeTrustMessage,
  MAX_TRUST_MESSAGE_BYTES,
  TRUST_MESSAGE_MAX_AGE_MS,
  TRUST_MESSAGE_MAX_FUTURE_MS,
  type TrustMessage,
  trustHandshakeChallenge,
  TrustMessageType
} from "../../src/protocol/trust-message.ts"
import { failure, ok } from "./arbitraries.ts"


const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text)
const base64Of = (bytes: number) =>
  fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString("base64"))

const trustMessage: fc.Arbitrary<TrustMessage> = fc.record({
  type: fc.constantFrom(...TrustMessageType.literals),
  node_id: fc.integer({ min: 0, max: 0xffffffff }),
  public_key: fc.oneof(fc.constant(""), base64Of(32)),
  justification: fc.string({ unit: "binary", maxLength: 100 }),
  signature: fc.oneof(fc.constant(""), base64Of(64)),
  reason: fc.string({ unit: "binary", maxLength: 100 }),
  timestamp: fc.maxSafeInteger()
})

const valid: TrustMessage = {
  type: "handshake_request",
  node_id: 5,
  public_key: Buffer.alloc(32, 3).toString("base64"),
  justification: "research collaboration",
  signature: Buffer.alloc(64, 4).toString("base64"),
  reason: "",
  timestamp: 1714500000
}

describe("trust message round trip", () => {
  it("decodes every message it encodes", () => {
    fc.assert(
      fc.property(trustMessage, (message) => {
        expect(ok(decodeTrustMessage(ok(encodeTrustMessage(message))))).toEqual(message)
      }),
      { numRuns: 300 }
    )
  })

  it("writes every field, in Go's order, with \"\" for absent ones", () => {
    const bytes = ok(encodeTrustMessage({ ...valid, type: "handshake_accept", public_key: "", signature: "", justification: "" }))
    expect(new TextDecoder().decode(bytes)).toBe(
      "{\"type\":\"handshake_accept\",\"node_id\":5,\"public_key\":\"\",\"justification\":\"\",\"signature\":\"\"," +
        "\"reason\":\"\",\"timestamp\":1714500000}"
    )
  })

  it("reads a Go peer's message", () => {
    const go = `{"type":"handshake_reject","node_id":9,"public_key":"","justification":"","signature":"","reason":"not now","timestamp":1714500001}`
    expect(ok(decodeTrustMessage(utf8(go)))).toEqual({
      type: "handshake_reject",
      node_id: 9,
      public_key: "",
      justification: "",
      signature: "",
      reason: "not now",
      timestamp: 1714500001
    })
  })
})

describe("trust message validation", () => {
  const { reason: _reason, ...withoutReason } = valid
  const cases: ReadonlyArray<readonly [string, unknown, string]> = [
    ["an unknown type", { ...valid, type: "handshake_hello" }, "type"],
    ["a missing field", withoutReason, "reason"],
    ["a string node_id", { ...valid, node_id: "5" }, "node_id"],
    ["a node_id past u32", { ...valid, node_id: 2 ** 32 }, "node_id"],
    ["a 31-byte key", { ...valid, public_key: Buffer.alloc(31).toString("base64") }, "public_key"],
    ["a 65-byte signature", { ...valid, signature: Buffer.alloc(65).toString("base64") }, "signature"],
    ["a fractional timestamp", { ...valid, timestamp: 1.5 }, "timestamp"],
    ["a string timestamp", { ...valid, timestamp: "1714500000" }, "timestamp"]
  ]
  for (const [name, input, field] of cases) {
    it(`rejects ${name}, naming the field`, () => {
      const error = failure(decodeTrustMessage(utf8(JSON.stringify(input))))
      expect(error.reason).toBe("invalid")
      expect(error.frame).toBe(`trust message.${field}`)
    })
  }

  it("rejects non-objects, invalid JSON and invalid UTF-8", () => {
    expect(failure(decodeTrustMessage(utf8("[]"))).detail).toContain("JSON object")
    expect(failure(decodeTrustMessage(utf8("{\"type\""))).detail).toContain("JSON")
    expect(failure(decodeTrustMessage(new Uint8Array([0x7b, 0xc3, 0x7d]))).detail).toContain("UTF-8")
  })

  it("refuses more than 64 KiB both ways", () => {
    const big = { ...valid, justification: "x".repeat(MAX_TRUST_MESSAGE_BYTES) }
    expect(failure(encodeTrustMessage(big)).reason).toBe("oversize")
    expect(failure(decodeTrustMessage(utf8(JSON.stringify(big)))).reason).toBe("oversize")
    const padding = MAX_TRUST_MESSAGE_BYTES - ok(encodeTrustMessage({ ...valid, justification: "" })).byteLength
    expect(ok(encodeTrustMessage({ ...valid, justification: "x".repeat(padding) })).byteLength).toBe(MAX_TRUST_MESSAGE_BYTES)
    expect(failure(encodeTrustMessage({ ...valid, justification: "x".repeat(padding + 1) })).reason).toBe("oversize")
  })

  it("never throws on arbitrary bytes or JSON", () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 80 }), fc.jsonValue().map((v) => utf8(JSON.stringify(v)))), (bytes) => {
        const result = decodeTrustMessage(bytes)
        if (Result.isFailure(result)) expect(result.failure.reason).toBe("invalid")
      }),
      { numRuns: 500 }
    )
  })
})

describe("trust handshake challenge", () => {
  it("is handshake:<sender>:<receiver> in decimal", () => {
    expect(trustHandshakeChallenge(5, 4294967295)).toBe("handshake:5:4294967295")
  })
})

describe("checkTrustTimestamp", () => {
  const sent = 1_714_500_000
  it("accepts up to 5 minutes old and 30 seconds ahead, inclusive", () => {
    expect(checkTrustTimestamp(sent, sent * 1000)).toBe("fresh")
    expect(checkTrustTimestamp(sent, sent * 1000 + TRUST_MESSAGE_MAX_AGE_MS)).toBe("fresh")
    expect(checkTrustTimestamp(sent, sent * 1000 + TRUST_MESSAGE_MAX_AGE_MS + 1)).toBe("too_old")
    expect(checkTrustTimestamp(sent, sent * 1000 - TRUST_MESSAGE_MAX_FUTURE_MS)).toBe("fresh")
    expect(checkTrustTimestamp(sent, sent * 1000 - TRUST_MESSAGE_MAX_FUTURE_MS - 1)).toBe("too_far_ahead")
  })

  it("classifies every age by the window", () => {
    fc.assert(
      fc.property(fc.integer({ min: -10 * 60_000, max: 10 * 60_000 }), (ageMillis) => {
        const verdict = checkTrustTimestamp(sent, sent * 1000 + ageMillis)
        const expected = ageMillis > 300_000 ? "too_old" : ageMillis < -30_000 ? "too_far_ahead" : "fresh"
        expect(verdict).toBe(expected)
      }),
      { numRuns: 500 }
    )
  })
})

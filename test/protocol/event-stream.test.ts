/**
 * The event-stream codec (reference §11): round trips, any split of the byte stream, and
 * total decoding of random bytes (a typed DecodeError, never a throw).
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import { DecodeError } from "../../src/protocol/errors.ts"
import { decodeEvent, encodeEvent, makeEventSplitter, MAX_TOPIC_BYTES } from "../../src/protocol/event-stream.ts"

const eventArb = fc.record({
  topic: fc.string({ maxLength: 40 }).filter((t) => t.isWellFormed()),
  payload: fc.uint8Array({ maxLength: 300 })
})

const ok = <A>(r: Result.Result<A, DecodeError>): A => {
  if (Result.isFailure(r)) throw r.failure
  return r.success
}

const fails = <A>(r: Result.Result<A, DecodeError>): DecodeError => {
  if (Result.isSuccess(r)) throw new Error("expected a DecodeError")
  return r.failure
}

/** `bytes` cut at the given (sorted, deduplicated) offsets. */
const cut = (bytes: Uint8Array, offsets: ReadonlyArray<number>) => {
  const points = [...new Set(offsets.map((o) => o % (bytes.byteLength + 1)))].sort((a, b) => a - b)
  const pieces: Array<Uint8Array> = []
  let at = 0
  for (const p of points) {
    pieces.push(bytes.subarray(at, p))
    at = p
  }
  pieces.push(bytes.subarray(at))
  return pieces
}

const concat = (parts: ReadonlyArray<Uint8Array>) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.byteLength
  }
  return out
}

describe("event-stream events", () => {
  it("round-trip, alone and as a stream split anywhere", () => {
    fc.assert(fc.property(fc.array(eventArb, { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (events, offsets) => {
      const encoded = events.map((e) => ok(encodeEvent(e)))
      for (let i = 0; i < events.length; i++) assert.deepStrictEqual(ok(decodeEvent(encoded[i]!)), events[i])
      const splitter = makeEventSplitter()
      const out = cut(concat(encoded), offsets).flatMap((piece) => ok(splitter.push(piece)))
      assert.deepStrictEqual(out, events)
    }), { numRuns: 300 })
  })

  it("random bytes decode to an event or a typed DecodeError, never a throw", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const one = decodeEvent(bytes)
      assert.isTrue(Result.isSuccess(one) || one.failure instanceof DecodeError)
      const streamed = makeEventSplitter().push(bytes)
      assert.isTrue(Result.isSuccess(streamed) || streamed.failure instanceof DecodeError)
    }), { numRuns: 1000 })
  })

  it("limits: topic ≤ 1024 bytes, payload ≤ 16 MiB, topic must be UTF-8", () => {
    assert.strictEqual(fails((encodeEvent({ topic: "t".repeat(MAX_TOPIC_BYTES + 1), payload: new Uint8Array() }))).reason, "oversize")
    assert.isTrue(Result.isSuccess(encodeEvent({ topic: "t".repeat(MAX_TOPIC_BYTES), payload: new Uint8Array() })))
    assert.strictEqual(fails((makeEventSplitter().push(new Uint8Array([0x04, 0x01])))).reason, "oversize")
    assert.strictEqual(fails((makeEventSplitter().push(new Uint8Array([0, 1, 0xff, 0, 0, 0, 0])))).reason, "invalid")
    assert.strictEqual(fails((makeEventSplitter().push(new Uint8Array([0, 0, 0x01, 0, 0, 1])))).reason, "oversize")
    assert.strictEqual(fails((decodeEvent(new Uint8Array([0, 0, 0, 0, 0, 0, 9])))).reason, "inconsistent")
  })
})

/**
 * The data-exchange codec (reference §11): round trips, any split of the byte stream, and
 * total decoding of random bytes (a typed DecodeError, never a throw).
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import {
  decodeDataFrame,
  decodeFilePayload,
  encodeDataFrame,
  encodeFilePayload,
  makeDataFrameSplitter,
  MAX_DATA_PAYLOAD
} from "../../src/protocol/data-exchange.ts"
import { DecodeError } from "../../src/protocol/errors.ts"

const frameArb = fc.record({
  type: fc.constantFrom(1 as const, 2 as const, 3 as const, 4 as const),
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

describe("data-exchange frames", () => {
  it("round-trip, alone and as a stream split anywhere", () => {
    fc.assert(fc.property(fc.array(frameArb, { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (frames, offsets) => {
      const encoded = frames.map((f) => ok(encodeDataFrame(f)))
      for (let i = 0; i < frames.length; i++) assert.deepStrictEqual(ok(decodeDataFrame(encoded[i]!)), frames[i])
      const splitter = makeDataFrameSplitter()
      const out = cut(concat(encoded), offsets).flatMap((piece) => ok(splitter.push(piece)))
      assert.deepStrictEqual(out, frames)
      assert.strictEqual(splitter.bufferedBytes, 0)
    }), { numRuns: 300 })
  })

  it("file payloads round-trip; the name is UTF-8 and bounded", () => {
    fc.assert(fc.property(fc.string({ maxLength: 50 }).filter((s) => s.isWellFormed()), fc.uint8Array({ maxLength: 100 }), (name, data) => {
      assert.deepStrictEqual(ok(decodeFilePayload(ok(encodeFilePayload({ name, data })))), { name, data })
    }))
    assert.strictEqual(fails((encodeFilePayload({ name: "x".repeat(70_000), data: new Uint8Array() }))).reason, "oversize")
    const lying = new Uint8Array([0, 10, 65])
    assert.strictEqual(fails((decodeFilePayload(lying))).reason, "inconsistent")
  })

  it("random bytes decode to a frame or a typed DecodeError, never a throw", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const one = decodeDataFrame(bytes)
      assert.isTrue(Result.isSuccess(one) || one.failure instanceof DecodeError)
      const streamed = makeDataFrameSplitter().push(bytes)
      assert.isTrue(Result.isSuccess(streamed) || streamed.failure instanceof DecodeError)
    }), { numRuns: 1000 })
  })

  it("an unknown type or an oversize length is refused from the header alone, and the splitter stays dead", () => {
    const header = new Uint8Array(8)
    const view = new DataView(header.buffer)
    view.setUint32(0, 5)
    const splitter = makeDataFrameSplitter()
    assert.strictEqual(fails((splitter.push(header))).reason, "invalid")
    assert.strictEqual(fails((splitter.push(new Uint8Array(0)))).reason, "invalid")
    view.setUint32(0, 1)
    view.setUint32(4, MAX_DATA_PAYLOAD + 1)
    assert.strictEqual(fails((makeDataFrameSplitter().push(header))).reason, "oversize")
    view.setUint32(4, MAX_DATA_PAYLOAD)
    const fine = makeDataFrameSplitter()
    assert.deepStrictEqual(ok(fine.push(header)), [])
    assert.strictEqual(fine.bufferedBytes, 8)
    assert.strictEqual(fails((encodeDataFrame({ type: 1, payload: new Uint8Array(MAX_DATA_PAYLOAD + 1) }))).reason, "oversize")
  })
})

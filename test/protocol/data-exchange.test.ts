/**
 * The data-exchange codec (reference §11): round trips, any split of the byte stream, and
 * total decoding of random bytes (a typed DecodeError, never a throw).
 */
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import {
  type DataFrame,
  decodeDataFrame,
  decodeFilePayload,
  encodeDataFrame,
  encodeFilePayload,
  makeDataFrameSplitter,
  MAX_DATA_PAYLOAD
} from "../../src/protocol/data-exchange.ts"
import { failure as fails, ok } from "./arbitraries.ts"
import { assertStreamRoundTrip, assertTotalDecoding, type StreamCodec } from "./framing-properties.ts"

const frameArb = fc.record({
  type: fc.constantFrom(1 as const, 2 as const, 3 as const, 4 as const),
  payload: fc.uint8Array({ maxLength: 300 })
})

const codec: StreamCodec<DataFrame> = {
  encode: encodeDataFrame,
  decode: decodeDataFrame,
  makeSplitter: () => makeDataFrameSplitter()
}

describe("data-exchange frames", () => {
  it("round-trip, alone and as a stream split anywhere", () => {
    assertStreamRoundTrip(codec, frameArb)
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
    assertTotalDecoding(codec)
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

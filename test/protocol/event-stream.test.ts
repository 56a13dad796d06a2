/**
 * The event-stream codec (reference §11): round trips, any split of the byte stream, and
 * total decoding of random bytes (a typed DecodeError, never a throw).
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import {
  decodeEvent,
  encodeEvent,
  makeEventSplitter,
  MAX_TOPIC_BYTES,
  type StreamEvent
} from "../../src/protocol/event-stream.ts"
import { failure as fails } from "./arbitraries.ts"
import { assertStreamRoundTrip, assertTotalDecoding, type StreamCodec } from "./framing-properties.ts"

const eventArb = fc.record({
  topic: fc.string({ maxLength: 40 }).filter((t) => t.isWellFormed()),
  payload: fc.uint8Array({ maxLength: 300 })
})

const codec: StreamCodec<StreamEvent> = { encode: encodeEvent, decode: decodeEvent, makeSplitter: () => makeEventSplitter() }

describe("event-stream events", () => {
  it("round-trip, alone and as a stream split anywhere", () => {
    assertStreamRoundTrip(codec, eventArb)
  })

  it("random bytes decode to an event or a typed DecodeError, never a throw", () => {
    assertTotalDecoding(codec)
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

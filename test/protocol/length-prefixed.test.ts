import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import {
  decodeJsonBody,
  decodeJsonObjectBody,
  decodeUtf8,
  encodeFrame,
  encodeJson,
  encodeJsonFrame,
  encodeUtf8,
  LENGTH_PREFIX_BYTES,
  makeFrameSplitter,
  MAX_FRAME_BODY
} from "../../src/protocol/length-prefixed.ts"
import { failure, ok } from "./arbitraries.ts"
import { concat, cut } from "./framing-properties.ts"


describe("encodeFrame", () => {
  it("writes a big-endian u32 body length then the body, in one buffer", () => {
    expect([...ok(encodeFrame(new Uint8Array([0xaa, 0xbb, 0xcc])))]).toEqual([0, 0, 0, 3, 0xaa, 0xbb, 0xcc])
    expect([...ok(encodeFrame(new Uint8Array(0)))]).toEqual([0, 0, 0, 0])
  })

  it("accepts a body of exactly the limit and refuses one byte more", () => {
    expect(ok(encodeFrame(new Uint8Array(MAX_FRAME_BODY))).byteLength).toBe(MAX_FRAME_BODY + LENGTH_PREFIX_BYTES)
    const error = failure(encodeFrame(new Uint8Array(MAX_FRAME_BODY + 1)))
    expect(error.reason).toBe("oversize")
  })
})

describe("makeFrameSplitter", () => {
  it("returns every frame unchanged whatever the chunk boundaries", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (bodies, cuts) => {
          const stream = concat(bodies.map((body) => ok(encodeFrame(body))))
          const splitter = makeFrameSplitter()
          const out: Array<Uint8Array> = []
          for (const chunk of cut(stream, cuts)) out.push(...ok(splitter.push(chunk)))
          expect(out.map((b) => [...b])).toEqual(bodies.map((b) => [...b]))
          expect(splitter.bufferedBytes).toBe(0)
        }
      ),
      { numRuns: 300 }
    )
  })

  it("reassembles a frame fed one byte at a time and several frames from one chunk", () => {
    const frames = [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array([9])]
    const stream = concat(frames.map((body) => ok(encodeFrame(body))))

    const byteWise = makeFrameSplitter()
    const out: Array<Array<number>> = []
    for (const byte of stream) {
      for (const body of ok(byteWise.push(new Uint8Array([byte])))) out.push([...body])
    }
    expect(out).toEqual([[1, 2, 3], [], [9]])

    const whole = makeFrameSplitter()
    expect(ok(whole.push(stream)).map((b) => [...b])).toEqual([[1, 2, 3], [], [9]])
  })

  it("reports the bytes of an unfinished frame", () => {
    const splitter = makeFrameSplitter()
    expect(ok(splitter.push(new Uint8Array([0, 0])))).toEqual([])
    expect(splitter.bufferedBytes).toBe(2)
    expect(ok(splitter.push(new Uint8Array([0, 5, 1, 2])))).toEqual([])
    expect(splitter.bufferedBytes).toBe(2)
  })

  it("refuses an oversize length as soon as the prefix is complete, before any body byte", () => {
    const splitter = makeFrameSplitter()
    expect(ok(splitter.push(new Uint8Array([0x00, 0x10])))).toEqual([])
    const error = failure(splitter.push(new Uint8Array([0x00, 0x01])))
    expect(error.reason).toBe("oversize")
    expect(error.detail).toContain(String(MAX_FRAME_BODY + 1))
    expect(splitter.bufferedBytes).toBe(0)
    // The connection is dead: later data is refused with the same error, not parsed.
    expect(failure(splitter.push(ok(encodeFrame(new Uint8Array([1]))))).reason).toBe("oversize")
  })

  it("accepts a prefix of exactly the limit", () => {
    const splitter = makeFrameSplitter()
    expect(ok(splitter.push(new Uint8Array([0x00, 0x10, 0x00, 0x00])))).toEqual([])
    const bodies = ok(splitter.push(new Uint8Array(MAX_FRAME_BODY)))
    expect(bodies.map((b) => b.byteLength)).toEqual([MAX_FRAME_BODY])
  })

  it("honours a smaller configured limit", () => {
    const splitter = makeFrameSplitter({ maxBody: 4 })
    expect(ok(splitter.push(ok(encodeFrame(new Uint8Array(4))))).length).toBe(1)
    expect(failure(splitter.push(ok(encodeFrame(new Uint8Array(5))))).reason).toBe("oversize")
  })

  it("never throws on arbitrary byte streams, and fails only with oversize", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), (chunks) => {
        const splitter = makeFrameSplitter({ maxBody: 48 })
        for (const chunk of chunks) {
          const result = splitter.push(chunk)
          if (Result.isFailure(result)) {
            expect(result.failure.reason).toBe("oversize")
            return
          }
          for (const body of result.success) expect(body.byteLength).toBeLessThanOrEqual(48)
        }
      }),
      { numRuns: 500 }
    )
  })
})

describe("JSON framing", () => {
  it("round-trips any JSON value through a frame", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const [body] = ok(makeFrameSplitter().push(ok(encodeJsonFrame(value))))
        expect(ok(decodeJsonBody(body as Uint8Array))).toEqual(JSON.parse(JSON.stringify(value)))
      }),
      { numRuns: 300 }
    )
  })

  it("refuses values JSON cannot carry", () => {
    expect(failure(encodeJson(undefined, "t")).reason).toBe("invalid")
    expect(failure(encodeJson(10n, "t")).reason).toBe("invalid")
    const cyclic: { self?: unknown } = {}
    cyclic.self = cyclic
    expect(failure(encodeJsonFrame(cyclic)).reason).toBe("invalid")
  })

  it("types invalid UTF-8, invalid JSON and non-objects as invalid", () => {
    const utf8 = failure(decodeJsonBody(new Uint8Array([0x22, 0xff, 0x22])))
    expect(utf8.reason).toBe("invalid")
    expect(utf8.detail).toContain("UTF-8")
    const json = failure(decodeJsonBody(new TextEncoder().encode("{\"a\":")))
    expect(json.reason).toBe("invalid")
    expect(json.detail).toContain("JSON")
    for (const text of ["[1]", "null", "3", "\"s\""]) {
      const error = failure(decodeJsonObjectBody(new TextEncoder().encode(text)))
      expect(error.reason).toBe("invalid")
      expect(error.detail).toContain("expected a JSON object")
    }
    expect(ok(decodeJsonObjectBody(new TextEncoder().encode("{\"type\":\"x\"}")))).toEqual({ type: "x" })
  })

  it("never throws on arbitrary bodies", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (body) => {
        const result = decodeJsonObjectBody(body)
        expect(Result.isSuccess(result) || result.failure.reason === "invalid").toBe(true)
      }),
      { numRuns: 500 }
    )
  })
})

describe("UTF-8 text", () => {
  it("round-trips well-formed text, including a leading byte-order mark", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 64 }), (text) => {
        expect(ok(decodeUtf8(ok(encodeUtf8(text, "t")), "t"))).toBe(text)
      }),
      { numRuns: 300 }
    )
    expect(ok(decodeUtf8(ok(encodeUtf8("\uFEFFx", "t")), "t"))).toBe("\uFEFFx")
  })

  it("refuses lone surrogates instead of sending U+FFFD", () => {
    expect(failure(encodeUtf8("a\uD800b", "t")).reason).toBe("invalid")
  })
})

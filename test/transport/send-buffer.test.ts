import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { SendBuffer } from "../../src/transport/send-buffer.ts"
import { bytes, concat } from "./stream-fixtures.ts"

describe("SendBuffer", () => {
  it("copies on append, so the writer may reuse its buffer", () => {
    const buffer = new SendBuffer()
    const data = bytes(10)
    buffer.append(data)
    data.fill(0)
    expect(Array.from(buffer.take(10))).toEqual(Array.from(bytes(10)))
  })

  it("cuts inside one chunk without copying and gathers across chunks", () => {
    const buffer = new SendBuffer()
    buffer.append(bytes(100, 1))
    buffer.append(bytes(50, 2))
    const inside = buffer.take(60)
    expect(inside.buffer).toBe(buffer.peek(1).buffer) // both views of the first chunk's copy
    const across = buffer.take(70)
    expect(Array.from(concat([inside, across]))).toEqual(Array.from(concat([bytes(100, 1), bytes(50, 2)]).subarray(0, 130)))
    expect(buffer.length).toBe(20)
  })

  it("returns the bytes in order whatever the write and segment sizes", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 30 }), fc.array(fc.integer({ min: 1, max: 500 }), { minLength: 1 }), (writes, takes) => {
        const buffer = new SendBuffer()
        const written = writes.map((n, i) => bytes(n, i))
        written.forEach((w) => buffer.append(w))
        const out: Array<Uint8Array> = []
        for (let i = 0; buffer.length > 0; i++) {
          const before = buffer.length
          const peeked = Array.from(buffer.peek(5))
          const piece = buffer.take(takes[i % takes.length] as number)
          expect(Array.from(piece.subarray(0, 5))).toEqual(peeked.slice(0, piece.byteLength))
          expect(buffer.length).toBe(before - piece.byteLength)
          out.push(piece)
        }
        expect(Buffer.from(concat(out)).equals(Buffer.from(concat(written)))).toBe(true)
      }),
      { numRuns: 300 }
    )
  })
})

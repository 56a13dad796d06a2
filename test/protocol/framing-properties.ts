/**
 * Properties every stream codec with a splitter must keep (length-prefixed, data exchange, event stream):
 * messages round-trip alone and as a byte stream cut at any offsets, and random bytes decode to a value or a
 * typed DecodeError, never a throw. One copy here so that each codec's test states only what differs.
 */
import { assert } from "@effect/vitest"
import type { Result } from "effect"
import fc from "fast-check"
import type { DecodeError } from "../../src/protocol/errors.ts"
import { isWellFormedOutcome, ok } from "./arbitraries.ts"

export const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.byteLength
  }
  return out
}

/** `bytes` cut at the given offsets (taken modulo its length + 1, then sorted and deduplicated). */
export const cut = (bytes: Uint8Array, offsets: ReadonlyArray<number>): Array<Uint8Array> => {
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

/** A codec of messages `A` framed on a byte stream. */
export interface StreamCodec<A> {
  readonly encode: (message: A) => Result.Result<Uint8Array, DecodeError>
  readonly decode: (bytes: Uint8Array) => Result.Result<A, DecodeError>
  readonly makeSplitter: () => {
    readonly push: (chunk: Uint8Array) => Result.Result<ReadonlyArray<A>, DecodeError>
    readonly bufferedBytes: number
  }
}

/** Up to six messages round-trip one by one, and as one stream split anywhere with nothing left buffered. */
export const assertStreamRoundTrip = <A>(codec: StreamCodec<A>, message: fc.Arbitrary<A>): void =>
  fc.assert(
    fc.property(fc.array(message, { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (messages, offsets) => {
      const encoded = messages.map((m) => ok(codec.encode(m)))
      for (let i = 0; i < messages.length; i++) assert.deepStrictEqual(ok(codec.decode(encoded[i]!)), messages[i])
      const splitter = codec.makeSplitter()
      const out = cut(concat(encoded), offsets).flatMap((piece) => ok(splitter.push(piece)))
      assert.deepStrictEqual(out, messages)
      assert.strictEqual(splitter.bufferedBytes, 0)
    }),
    { numRuns: 300 }
  )

/** Random bytes, decoded alone or pushed into a fresh splitter, give a Result, never a throw. */
export const assertTotalDecoding = <A>(codec: StreamCodec<A>): void =>
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      assert.isTrue(isWellFormedOutcome(codec.decode(bytes)))
      assert.isTrue(isWellFormedOutcome(codec.makeSplitter().push(bytes)))
    }),
    { numRuns: 1000 }
  )

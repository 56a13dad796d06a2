/**
 * Length-prefixed framing shared by the daemon's IPC socket and the registry's TCP connections (reference §6,
 * §9): `[u32 big-endian body length][body]`, body at most 1 MiB. Like Go's `ipcutil`, the bound is inclusive
 * and applies to the body only (the 4-byte prefix is not counted).
 *
 * Three layers, all pure:
 * - `allocateFrame` / `encodeFrame` build prefix + body in ONE buffer, so a frame is one socket write and two
 *   writers can never interleave a prefix with someone else's body.
 * - `makeFrameSplitter` turns a stream of arbitrarily split chunks back into bodies. It holds at most one
 *   partial frame plus up to 3 bytes of a split prefix, and refuses an oversize prefix before buffering a
 *   single body byte. A partial frame is kept as the pieces that actually arrived and joined once, when it
 *   completes: memory follows the bytes a peer really sent, not the length it claims (a prefix claiming 1 MiB
 *   followed by silence costs nothing).
 * - `encodeJsonFrame` / `decodeJsonBody` / `decodeJsonObjectBody` put UTF-8 JSON on top; text is decoded
 *   fatally, so invalid UTF-8 is an error instead of silently becoming U+FFFD.
 */
import { Result } from "effect"
import { type DecodeError, decodeFail } from "./errors.ts"

export const LENGTH_PREFIX_BYTES = 4
/** Largest body either side accepts (1 MiB, inclusive), as in Go's `ipcutil.MaxMessageSize`. */
export const MAX_FRAME_BODY = 1 << 20

const FRAME = "length-prefixed frame"

const oversize = (frame: string, length: number, max: number) =>
  decodeFail(frame, "oversize", `body of ${length} bytes exceeds the ${max}-byte limit`)

/**
 * A zeroed frame for a body of `bodyLength` bytes with the prefix already written; the caller fills the body
 * at offset `LENGTH_PREFIX_BYTES`. Fails with `oversize` past `maxBody`, so a frame the peer would reject (and
 * answer by closing the connection) is never produced.
 */
export const allocateFrame = (
  bodyLength: number,
  maxBody: number = MAX_FRAME_BODY
): Result.Result<Uint8Array, DecodeError> => {
  if (bodyLength > maxBody) return oversize(FRAME, bodyLength, maxBody)
  const frame = new Uint8Array(LENGTH_PREFIX_BYTES + bodyLength)
  new DataView(frame.buffer).setUint32(0, bodyLength)
  return Result.succeed(frame)
}

export const encodeFrame = (body: Uint8Array, maxBody: number = MAX_FRAME_BODY): Result.Result<Uint8Array, DecodeError> =>
  Result.map(allocateFrame(body.byteLength, maxBody), (frame) => {
    frame.set(body, LENGTH_PREFIX_BYTES)
    return frame
  })

export interface FrameSplitter {
  /**
   * Feeds the next chunk of the stream and returns the bodies it completed, in order. A body may be a view
   * into `chunk` (no copy when a frame lies entirely inside one chunk); copy it before reusing the chunk's
   * memory. After an `oversize` failure the splitter is dead: every later call returns the same error, and the
   * caller is expected to close the connection.
   */
  readonly push: (chunk: Uint8Array) => Result.Result<ReadonlyArray<Uint8Array>, DecodeError>
  /** Bytes of an unfinished frame held right now; non-zero at end of stream means the peer cut a frame short. */
  readonly bufferedBytes: number
}

/** The pieces of a byte stream joined into one array of `length` bytes (no copy when there is one piece). */
export const concatBytes = (pieces: ReadonlyArray<Uint8Array>, length: number): Uint8Array => {
  if (pieces.length === 1) return pieces[0]!
  const joined = new Uint8Array(length)
  let at = 0
  for (const piece of pieces) {
    joined.set(piece, at)
    at += piece.byteLength
  }
  return joined
}

export const makeFrameSplitter = (options?: { readonly maxBody?: number }): FrameSplitter => {
  const maxBody = options?.maxBody ?? MAX_FRAME_BODY
  const prefix = new Uint8Array(LENGTH_PREFIX_BYTES)
  const prefixView = new DataView(prefix.buffer)
  let prefixFill = 0
  // The unfinished frame: its declared length and the copies of its pieces received so far.
  let bodyLength = -1
  let pieces: Array<Uint8Array> = []
  let bodyFill = 0
  let failure: Result.Result<never, DecodeError> | undefined

  const push = (chunk: Uint8Array): Result.Result<ReadonlyArray<Uint8Array>, DecodeError> => {
    if (failure !== undefined) return failure
    const bodies: Array<Uint8Array> = []
    const chunkView = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    let offset = 0
    while (offset < chunk.byteLength) {
      if (bodyLength < 0) {
        let length: number
        if (prefixFill === 0 && chunk.byteLength - offset >= LENGTH_PREFIX_BYTES) {
          length = chunkView.getUint32(offset)
          offset += LENGTH_PREFIX_BYTES
        } else {
          const take = Math.min(LENGTH_PREFIX_BYTES - prefixFill, chunk.byteLength - offset)
          prefix.set(chunk.subarray(offset, offset + take), prefixFill)
          prefixFill += take
          offset += take
          if (prefixFill < LENGTH_PREFIX_BYTES) break
          prefixFill = 0
          length = prefixView.getUint32(0)
        }
        if (length > maxBody) {
          failure = oversize(FRAME, length, maxBody)
          return failure
        }
        if (chunk.byteLength - offset >= length) {
          bodies.push(chunk.subarray(offset, offset + length))
          offset += length
          continue
        }
        bodyLength = length
      }
      const take = Math.min(bodyLength - bodyFill, chunk.byteLength - offset)
      // Copy: the caller may reuse the chunk's memory after `push` returns.
      pieces.push(chunk.slice(offset, offset + take))
      bodyFill += take
      offset += take
      if (bodyFill === bodyLength) {
        bodies.push(concatBytes(pieces, bodyLength))
        pieces = []
        bodyLength = -1
        bodyFill = 0
      }
    }
    return Result.succeed(bodies)
  }

  return {
    push,
    get bufferedBytes() {
      return prefixFill + bodyFill
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// UTF-8 text and JSON bodies
// ---------------------------------------------------------------------------------------------------------

const utf8Encoder = new TextEncoder()
// `ignoreBOM` keeps a leading U+FEFF as content, as Go's string(bytes) does, so text round-trips exactly.
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** Strict UTF-8 decoding: malformed bytes are an `invalid` error, never replaced by U+FFFD. */
export const decodeUtf8 = (bytes: Uint8Array, frame: string): Result.Result<string, DecodeError> => {
  try {
    return Result.succeed(utf8Decoder.decode(bytes))
  } catch {
    return decodeFail(frame, "invalid", "text is not valid UTF-8")
  }
}

/**
 * UTF-8 encoding that refuses lone surrogates instead of silently sending U+FFFD, so what the peer decodes is
 * exactly what the caller passed.
 */
export const encodeUtf8 = (text: string, frame: string): Result.Result<Uint8Array, DecodeError> =>
  text.isWellFormed()
    ? Result.succeed(utf8Encoder.encode(text))
    : decodeFail(frame, "invalid", "text contains a lone UTF-16 surrogate")

/** JSON text of `value` as UTF-8 bytes; fails for values JSON cannot carry (undefined, BigInt, cycles). */
export const encodeJson = (value: unknown, frame: string): Result.Result<Uint8Array, DecodeError> => {
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch (cause) {
    return decodeFail(frame, "invalid", `value is not JSON-serialisable: ${String(cause)}`)
  }
  return text === undefined
    ? decodeFail(frame, "invalid", "value is not JSON-serialisable")
    : Result.succeed(utf8Encoder.encode(text))
}

/** A length-prefixed frame carrying `value` as UTF-8 JSON, ready for one socket write. */
export const encodeJsonFrame = (
  value: unknown,
  maxBody: number = MAX_FRAME_BODY
): Result.Result<Uint8Array, DecodeError> => Result.flatMap(encodeJson(value, "json frame"), (body) => encodeFrame(body, maxBody))

/** Parses a UTF-8 JSON body of any JSON type. */
export const decodeJsonBody = (body: Uint8Array, frame: string = "json frame"): Result.Result<unknown, DecodeError> =>
  Result.flatMap(decodeUtf8(body, frame), (text) => {
    try {
      return Result.succeed<unknown>(JSON.parse(text))
    } catch (cause) {
      return decodeFail(frame, "invalid", `not valid JSON: ${cause instanceof Error ? cause.message : String(cause)}`)
    }
  })

export type JsonObject = { readonly [key: string]: unknown }

const isJsonObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Parses a UTF-8 JSON body that must be an object, as every registry message is. */
export const decodeJsonObjectBody = (body: Uint8Array, frame: string = "json frame"): Result.Result<JsonObject, DecodeError> =>
  Result.flatMap(decodeJsonBody(body, frame), (value) =>
    isJsonObject(value)
      ? Result.succeed(value)
      : decodeFail(frame, "invalid", `expected a JSON object, got ${Array.isArray(value) ? "an array" : value === null ? "null" : typeof value}`))

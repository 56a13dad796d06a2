/**
 * The data-exchange frame of port 1001 (reference §11): `[type u32][length u32][payload]`, big-endian, payload at
 * most 16 MiB; types 1 TEXT, 2 BINARY, 3 JSON, 4 FILE, a FILE payload being `[name_len u16][name][bytes]`.
 *
 * Pure and total like every codec here: encoders refuse what a peer would reject, decoders return a `DecodeError`
 * and never throw. `makeDataFrameSplitter` turns a stream of arbitrarily split chunks back into frames; it checks
 * a header (type and length) before buffering one payload byte, and keeps the pieces that really arrived, so
 * memory follows the bytes a peer sent, not the length it claims. `ByteQueue` is that buffer, shared with the
 * event-stream codec.
 */
import { Result } from "effect"
import { type DecodeError, decodeFail } from "./errors.ts"
import { concatBytes, decodeUtf8, encodeUtf8 } from "./length-prefixed.ts"

export const DATA_FRAME_HEADER_BYTES = 8
/** Largest payload (inclusive), as the reference's `maxFrameSize`. */
export const MAX_DATA_PAYLOAD = 16 * 1024 * 1024
/** Longest FILE name in bytes (the u16 field's range). */
export const MAX_FILE_NAME_BYTES = 0xffff

export const DataFrameType = { Text: 1, Binary: 2, Json: 3, File: 4 } as const
export type DataFrameType = (typeof DataFrameType)[keyof typeof DataFrameType]

/** The names the reference prints (`ACK TEXT 5 bytes`, inbox file names). */
export const dataFrameTypeName = (type: DataFrameType): "TEXT" | "BINARY" | "JSON" | "FILE" =>
  type === 1 ? "TEXT" : type === 2 ? "BINARY" : type === 3 ? "JSON" : "FILE"

export const parseDataFrameTypeName = (name: string): DataFrameType | undefined => {
  switch (name.toUpperCase()) {
    case "TEXT":
      return DataFrameType.Text
    case "BINARY":
      return DataFrameType.Binary
    case "JSON":
      return DataFrameType.Json
    case "FILE":
      return DataFrameType.File
    default:
      return undefined
  }
}

export interface DataFrame {
  readonly type: DataFrameType
  readonly payload: Uint8Array
}

const FRAME = "data-exchange frame"
const FILE = "data-exchange file payload"

const isType = (n: number): n is DataFrameType => n >= 1 && n <= 4

const checkHeader = (type: number, length: number, maxPayload: number): Result.Result<DataFrameType, DecodeError> => {
  if (!isType(type)) return decodeFail(FRAME, "invalid", `unknown frame type ${type}`)
  if (length > maxPayload) return decodeFail(FRAME, "oversize", `payload of ${length} bytes exceeds the ${maxPayload}-byte limit`)
  return Result.succeed(type)
}

/** One frame ready for one write; fails with `oversize` past 16 MiB. */
export const encodeDataFrame = (frame: DataFrame): Result.Result<Uint8Array, DecodeError> => {
  const checked = checkHeader(frame.type, frame.payload.byteLength, MAX_DATA_PAYLOAD)
  if (Result.isFailure(checked)) return Result.fail(checked.failure)
  const bytes = new Uint8Array(DATA_FRAME_HEADER_BYTES + frame.payload.byteLength)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, frame.type)
  view.setUint32(4, frame.payload.byteLength)
  bytes.set(frame.payload, DATA_FRAME_HEADER_BYTES)
  return Result.succeed(bytes)
}

/** Exactly one frame: trailing bytes are `inconsistent`. */
export const decodeDataFrame = (bytes: Uint8Array): Result.Result<DataFrame, DecodeError> => {
  if (bytes.byteLength < DATA_FRAME_HEADER_BYTES) return decodeFail(FRAME, "short", `${bytes.byteLength} bytes, the header alone is ${DATA_FRAME_HEADER_BYTES}`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const length = view.getUint32(4)
  const type = checkHeader(view.getUint32(0), length, MAX_DATA_PAYLOAD)
  if (Result.isFailure(type)) return Result.fail(type.failure)
  const available = bytes.byteLength - DATA_FRAME_HEADER_BYTES
  if (available < length) return decodeFail(FRAME, "short", `payload of ${length} bytes declared, ${available} present`)
  if (available > length) return decodeFail(FRAME, "inconsistent", `${available - length} bytes after the frame`)
  return Result.succeed({ type: type.success, payload: bytes.slice(DATA_FRAME_HEADER_BYTES) })
}

export interface FilePayload {
  readonly name: string
  readonly data: Uint8Array
}

export const encodeFilePayload = (file: FilePayload): Result.Result<Uint8Array, DecodeError> =>
  Result.flatMap(encodeUtf8(file.name, FILE), (name) => {
    if (name.byteLength > MAX_FILE_NAME_BYTES) return decodeFail(FILE, "oversize", `file name of ${name.byteLength} bytes exceeds ${MAX_FILE_NAME_BYTES}`)
    const bytes = new Uint8Array(2 + name.byteLength + file.data.byteLength)
    new DataView(bytes.buffer).setUint16(0, name.byteLength)
    bytes.set(name, 2)
    bytes.set(file.data, 2 + name.byteLength)
    return Result.succeed(bytes)
  })

export const decodeFilePayload = (payload: Uint8Array): Result.Result<FilePayload, DecodeError> => {
  if (payload.byteLength < 2) return decodeFail(FILE, "short", "no room for the name length")
  const nameLength = new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint16(0)
  if (payload.byteLength < 2 + nameLength) return decodeFail(FILE, "inconsistent", `name of ${nameLength} bytes declared, ${payload.byteLength - 2} bytes left`)
  return Result.map(
    decodeUtf8(payload.subarray(2, 2 + nameLength), FILE),
    (name) => ({ name, data: payload.subarray(2 + nameLength) })
  )
}

// ---------------------------------------------------------------------------------------------------------
// Stream reassembly
// ---------------------------------------------------------------------------------------------------------

/** Bytes received and not yet consumed, kept as the pieces that arrived (copied: callers may reuse chunks). */
export class ByteQueue {
  private pieces: Array<Uint8Array> = []
  private head = 0
  private total = 0

  get length(): number {
    return this.total
  }

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return
    this.pieces.push(chunk.slice())
    this.total += chunk.byteLength
  }

  /** The first `n` bytes (n ≤ length), consumed; a fresh array. */
  take(n: number): Uint8Array {
    const out: Array<Uint8Array> = []
    let need = n
    while (need > 0) {
      const piece = this.pieces[0]!
      const available = piece.byteLength - this.head
      const used = Math.min(available, need)
      out.push(piece.subarray(this.head, this.head + used))
      need -= used
      if (used === available) {
        this.pieces.shift()
        this.head = 0
      } else this.head += used
    }
    this.total -= n
    const joined = concatBytes(out, n)
    return out.length === 1 ? joined.slice() : joined
  }
}

export interface DataFrameSplitter {
  /** Feeds the next chunk; returns the frames it completed. After a failure every call returns that failure. */
  readonly push: (chunk: Uint8Array) => Result.Result<ReadonlyArray<DataFrame>, DecodeError>
  /** Bytes of an unfinished frame; non-zero at end of stream means the peer cut a frame short. */
  readonly bufferedBytes: number
}

export const makeDataFrameSplitter = (options?: { readonly maxPayload?: number }): DataFrameSplitter => {
  const maxPayload = options?.maxPayload ?? MAX_DATA_PAYLOAD
  const buffer = new ByteQueue()
  let header: { readonly type: DataFrameType; readonly length: number } | undefined
  let failure: Result.Result<never, DecodeError> | undefined
  const push = (chunk: Uint8Array): Result.Result<ReadonlyArray<DataFrame>, DecodeError> => {
    if (failure !== undefined) return failure
    buffer.push(chunk)
    const frames: Array<DataFrame> = []
    while (true) {
      if (header === undefined) {
        if (buffer.length < DATA_FRAME_HEADER_BYTES) break
        const bytes = buffer.take(DATA_FRAME_HEADER_BYTES)
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
        const length = view.getUint32(4)
        const type = checkHeader(view.getUint32(0), length, maxPayload)
        if (Result.isFailure(type)) {
          failure = Result.fail(type.failure)
          return failure
        }
        header = { type: type.success, length }
      }
      if (buffer.length < header.length) break
      frames.push({ type: header.type, payload: buffer.take(header.length) })
      header = undefined
    }
    return Result.succeed(frames)
  }
  return {
    push,
    get bufferedBytes() {
      return buffer.length + (header === undefined ? 0 : DATA_FRAME_HEADER_BYTES)
    }
  }
}

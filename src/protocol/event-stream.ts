/**
 * The event of port 1002 (reference §11): `[topic_len u16][topic][payload_len u32][payload]`, big-endian, topic at
 * most 1024 bytes of UTF-8, payload at most 16 MiB. The first event on a connection is its subscription (`*` for
 * every topic), later ones are publications.
 *
 * Pure and total: encoders refuse what a peer would reject, decoders return a `DecodeError`. The splitter checks
 * each length before buffering past it, and keeps only bytes that really arrived.
 */
import { Result } from "effect"
import { ByteQueue } from "./data-exchange.ts"
import { type DecodeError, decodeFail } from "./errors.ts"
import { decodeUtf8, encodeUtf8 } from "./length-prefixed.ts"

export const MAX_TOPIC_BYTES = 1024
export const MAX_EVENT_PAYLOAD = 16 * 1024 * 1024
/** The subscription topic that receives every publication. */
export const ALL_TOPICS = "*"

export interface StreamEvent {
  readonly topic: string
  readonly payload: Uint8Array
}

const FRAME = "event-stream event"

const topicTooLong = (n: number) => decodeFail(FRAME, "oversize", `topic of ${n} bytes exceeds the ${MAX_TOPIC_BYTES}-byte limit`)
const payloadTooLong = (n: number, max: number) => decodeFail(FRAME, "oversize", `payload of ${n} bytes exceeds the ${max}-byte limit`)

export const encodeEvent = (event: StreamEvent): Result.Result<Uint8Array, DecodeError> =>
  Result.flatMap(encodeUtf8(event.topic, FRAME), (topic) => {
    if (topic.byteLength > MAX_TOPIC_BYTES) return topicTooLong(topic.byteLength)
    if (event.payload.byteLength > MAX_EVENT_PAYLOAD) return payloadTooLong(event.payload.byteLength, MAX_EVENT_PAYLOAD)
    const bytes = new Uint8Array(2 + topic.byteLength + 4 + event.payload.byteLength)
    const view = new DataView(bytes.buffer)
    view.setUint16(0, topic.byteLength)
    bytes.set(topic, 2)
    view.setUint32(2 + topic.byteLength, event.payload.byteLength)
    bytes.set(event.payload, 6 + topic.byteLength)
    return Result.succeed(bytes)
  })

/** Exactly one event: trailing bytes are `inconsistent`. */
export const decodeEvent = (bytes: Uint8Array): Result.Result<StreamEvent, DecodeError> => {
  const splitter = makeEventSplitter()
  const events = splitter.push(bytes)
  if (Result.isFailure(events)) return Result.fail(events.failure)
  const [first, ...rest] = events.success
  if (first === undefined) return decodeFail(FRAME, "short", `${bytes.byteLength} bytes do not hold a whole event`)
  if (rest.length > 0 || splitter.bufferedBytes > 0) return decodeFail(FRAME, "inconsistent", "bytes after the event")
  return Result.succeed(first)
}

export interface EventSplitter {
  /** Feeds the next chunk; returns the events it completed. After a failure every call returns that failure. */
  readonly push: (chunk: Uint8Array) => Result.Result<ReadonlyArray<StreamEvent>, DecodeError>
  readonly bufferedBytes: number
}

export const makeEventSplitter = (options?: { readonly maxPayload?: number }): EventSplitter => {
  const maxPayload = options?.maxPayload ?? MAX_EVENT_PAYLOAD
  const buffer = new ByteQueue()
  let topicLength: number | undefined
  let topic: string | undefined
  let payloadLength: number | undefined
  let failure: Result.Result<never, DecodeError> | undefined
  const fail = (result: Result.Result<never, DecodeError>) => {
    failure = result
    return result
  }
  const push = (chunk: Uint8Array): Result.Result<ReadonlyArray<StreamEvent>, DecodeError> => {
    if (failure !== undefined) return failure
    buffer.push(chunk)
    const events: Array<StreamEvent> = []
    while (true) {
      if (topicLength === undefined) {
        if (buffer.length < 2) break
        const b = buffer.take(2)
        topicLength = (b[0]! << 8) | b[1]!
        if (topicLength > MAX_TOPIC_BYTES) return fail(topicTooLong(topicLength))
      }
      if (topic === undefined) {
        if (buffer.length < topicLength) break
        const decoded = decodeUtf8(buffer.take(topicLength), FRAME)
        if (Result.isFailure(decoded)) return fail(Result.fail(decoded.failure))
        topic = decoded.success
      }
      if (payloadLength === undefined) {
        if (buffer.length < 4) break
        const b = buffer.take(4)
        payloadLength = new DataView(b.buffer, b.byteOffset, 4).getUint32(0)
        if (payloadLength > maxPayload) return fail(payloadTooLong(payloadLength, maxPayload))
      }
      if (buffer.length < payloadLength) break
      events.push({ topic, payload: buffer.take(payloadLength) })
      topicLength = undefined
      topic = undefined
      payloadLength = undefined
    }
    return Result.succeed(events)
  }
  return {
    push,
    get bufferedBytes() {
      return buffer.length + (topicLength === undefined ? 0 : 2) + (topic === undefined ? 0 : (topicLength ?? 0)) + (payloadLength === undefined ? 0 : 4)
    }
  }
}

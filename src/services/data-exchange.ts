/**
 * The data-exchange service on port 1001 (reference §11): peers send frames (TEXT, BINARY, JSON, FILE) and each
 * one is saved and answered with a TEXT frame `ACK <TYPE> <n> bytes` or `ERR <TYPE> save failed: …`.
 *
 * - FILE → `<data>/received/<sanitised base>-<YYYYMMDD-HHMMSS.mmm><ext>` (UTC), TEXT/JSON/BINARY →
 *   `<data>/inbox/<TYPE>-<YYYYMMDD-HHMMSS.mmm>.json` holding `{type, from, data, bytes, received_at}` (BINARY data in
 *   base64). Files are 0600 and written atomically (temp, fsync, rename), directories 0700; a name already taken
 *   gets `-1`, `-2`, … so two frames in the same millisecond never overwrite each other.
 * - A save that fails (full disk, read-only or missing directory) is answered with ERR and counted; the connection
 *   and the service go on.
 * - A malformed or oversize frame, a stalled sender (no bytes for `readTimeout`) or a peer that cuts a frame short
 *   end THAT connection (reset) with a counted error; other connections are untouched.
 * - Each connection runs in its own fiber of a `FiberSet`; at most `maxConnections` at once, one more is reset
 *   and counted. Memory per connection follows the bytes really received (≤ one 16 MiB frame).
 * - `from` is the peer's virtual address as the transport knows it (authenticated by the tunnel).
 */
import { Clock, type Duration, Effect, FileSystem, Path, Result } from "effect"
import type { EventBus } from "../events/event-bus.ts"
import { writeFileAtomic } from "../lifecycle/atomic-file.ts"
import { formatAddr } from "../protocol/address.ts"
import {
  type DataFrame,
  DataFrameType,
  dataFrameTypeName,
  decodeFilePayload,
  encodeDataFrame,
  makeDataFrameSplitter
} from "../protocol/data-exchange.ts"
import type { Connection, Transport } from "../transport/transport.ts"
import { forkAcceptLoop } from "./accept-loop.ts"

export const DATA_EXCHANGE_PORT = 1001
export const INBOX_DIR = "inbox"
export const RECEIVED_DIR = "received"
/** Longest saved base name (UTF-16 units, before the timestamp and extension). */
export const MAX_BASENAME = 100
const MAX_EXTENSION = 16

export interface DataExchangeOptions {
  readonly dataDirectory: string
  readonly events?: EventBus | undefined
  /** Connections served at once (default 16); more are reset and counted. */
  readonly maxConnections?: number
  /** A sender silent this long is cut off (default 30 s). */
  readonly readTimeout?: Duration.Input
  /** Largest frame payload accepted (default 16 MiB). */
  readonly maxPayload?: number
}

export interface DataExchangeStats {
  readonly connections: number
  readonly active: number
  readonly rejected: number
  readonly messages: number
  readonly files: number
  readonly bytes: number
  readonly save_failures: number
  readonly malformed: number
  readonly stalled: number
  readonly failures: number
}

// ---- naming (pure) ------------------------------------------------------------------------------------------

const pad = (n: number, width: number) => String(n).padStart(width, "0")

/** `YYYYMMDD-HHMMSS.mmm` in UTC. */
export const fileTimestamp = (ms: number): string => {
  const d = new Date(ms)
  return `${d.getUTCFullYear()}${pad(d.getUTCMonth() + 1, 2)}${pad(d.getUTCDate(), 2)}-${pad(d.getUTCHours(), 2)}${pad(d.getUTCMinutes(), 2)}${pad(d.getUTCSeconds(), 2)}.${pad(d.getUTCMilliseconds(), 3)}`
}

/**
 * A peer's file name made safe to save: only the last path component (either separator), no control characters,
 * no leading dots (so neither `..` nor a hidden file), at most `MAX_BASENAME` characters of base and a short
 * alphanumeric extension; `file` when nothing is left.
 */
export const sanitiseFileName = (name: string): { readonly base: string; readonly ext: string } => {
  const last = name.split(/[/\\]/).at(-1) ?? ""
  // eslint-disable-next-line no-control-regex -- stripping control characters is the point
  const cleaned = last.replace(/[\u0000-\u001f\u007f-\u009f]/g, "").replace(/^[.\s]+/, "").replace(/[\s.]+$/, "")
  const dot = cleaned.lastIndexOf(".")
  const rawExt = dot > 0 ? cleaned.slice(dot + 1) : ""
  const ext = /^[A-Za-z0-9_-]{1,16}$/.test(rawExt) ? `.${rawExt}`.slice(0, MAX_EXTENSION + 1) : ""
  const baseRaw = ext === "" ? cleaned : cleaned.slice(0, dot)
  const base = [...baseRaw.replace(/\.{2,}/g, ".")].slice(0, MAX_BASENAME).join("")
  return { base: base === "" ? "file" : base, ext }
}

export const receivedFileName = (name: string, ms: number, suffix = 0): string => {
  const { base, ext } = sanitiseFileName(name)
  return `${base}-${fileTimestamp(ms)}${suffix === 0 ? "" : `-${suffix}`}${ext}`
}

export const inboxFileName = (type: DataFrameType, ms: number, suffix = 0): string =>
  `${dataFrameTypeName(type)}-${fileTimestamp(ms)}${suffix === 0 ? "" : `-${suffix}`}.json`

export const ackText = (type: DataFrameType, bytes: number) => `ACK ${dataFrameTypeName(type)} ${bytes} bytes`
export const errText = (type: DataFrameType, reason: string) => `ERR ${dataFrameTypeName(type)} save failed: ${reason}`

const utf8 = new TextDecoder()
const encoder = new TextEncoder()

/** The inbox record of a TEXT/JSON/BINARY frame (JSON kept as its text, as the reference stores it). */
export const inboxRecord = (frame: DataFrame, from: string, ms: number) => ({
  type: dataFrameTypeName(frame.type).toLowerCase(),
  from,
  data: frame.type === DataFrameType.Binary ? Buffer.from(frame.payload).toString("base64") : utf8.decode(frame.payload),
  bytes: frame.payload.byteLength,
  received_at: new Date(ms).toISOString()
})

// ---- the service --------------------------------------------------------------------------------------------

class Stalled {
  readonly _tag = "Stalled"
}

export const serveDataExchange = Effect.fnUntraced(function*(transport: Transport, options: DataExchangeOptions) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const services = yield* Effect.context<FileSystem.FileSystem | Path.Path>()
  const maxConnections = options.maxConnections ?? 16
  const readTimeout = options.readTimeout ?? "30 seconds"
  const listener = yield* transport.listen(DATA_EXCHANGE_PORT)
  const stats = { connections: 0, active: 0, rejected: 0, messages: 0, files: 0, bytes: 0, save_failures: 0, malformed: 0, stalled: 0, failures: 0 }
  const taken = new Set<string>()

  /** A free name in `dir` (none on disk, none being written right now); `make` builds it from a suffix. */
  const freeName = (dir: string, make: (suffix: number) => string) =>
    Effect.gen(function*() {
      for (let suffix = 0; suffix < 1000; suffix++) {
        const candidate = path.join(dir, make(suffix))
        if (taken.has(candidate)) continue
        if (yield* fs.exists(candidate)) continue
        taken.add(candidate)
        return candidate
      }
      return yield* Effect.fail(new Error("no free file name"))
    })

  const save = (dirName: string, make: (suffix: number) => string, data: Uint8Array) =>
    Effect.gen(function*() {
      const dir = path.join(options.dataDirectory, dirName)
      yield* fs.makeDirectory(dir, { recursive: true, mode: 0o700 })
      const target = yield* freeName(dir, make)
      yield* writeFileAtomic(target, data, { mode: 0o600 }).pipe(Effect.ensuring(Effect.sync(() => taken.delete(target))))
      return target
    })

  /** Saves one frame; returns the reply text. Never fails: a failed save is an ERR reply. */
  const handle = (frame: DataFrame, from: string) =>
    Effect.gen(function*() {
      const ms = yield* Clock.currentTimeMillis
      if (frame.type === DataFrameType.File) {
        const file = decodeFilePayload(frame.payload)
        if (Result.isFailure(file)) return { reply: errText(frame.type, file.failure.message), ok: false }
        const target = yield* save(RECEIVED_DIR, (suffix) => receivedFileName(file.success.name, ms, suffix), file.success.data)
        stats.files++
        stats.bytes += file.success.data.byteLength
        yield* publish("file.received", { filename: path.basename(target), original_name: file.success.name, from, bytes: file.success.data.byteLength, path: target })
        return { reply: ackText(frame.type, file.success.data.byteLength), ok: true }
      }
      const record = inboxRecord(frame, from, ms)
      const target = yield* save(INBOX_DIR, (suffix) => inboxFileName(frame.type, ms, suffix), encoder.encode(JSON.stringify(record)))
      stats.messages++
      stats.bytes += frame.payload.byteLength
      yield* publish("message.received", { type: record.type, from, bytes: record.bytes, path: target })
      return { reply: ackText(frame.type, frame.payload.byteLength), ok: true }
    }).pipe(
      Effect.catch((error) => Effect.succeed({ reply: errText(frame.type, error.message), ok: false })),
      Effect.tap(({ ok }) => Effect.sync(() => ok ? undefined : stats.save_failures++)),
      Effect.provide(services)
    )

  const publish = (name: string, data: { readonly [key: string]: unknown }) =>
    options.events === undefined ? Effect.void : options.events.publish(name, data)

  const reply = (connection: Connection, text: string) => {
    const frame = encodeDataFrame({ type: DataFrameType.Text, payload: encoder.encode(text) })
    return Result.isSuccess(frame) ? connection.write(frame.success) : Effect.void
  }

  const serve = (connection: Connection) =>
    Effect.gen(function*() {
      const from = formatAddr(connection.remote)
      const splitter = makeDataFrameSplitter(options.maxPayload === undefined ? undefined : { maxPayload: options.maxPayload })
      while (true) {
        const chunk = yield* connection.read.pipe(Effect.timeoutOrElse({ duration: readTimeout, orElse: () => Effect.fail(new Stalled()) }))
        if (chunk === undefined) break
        const frames = splitter.push(chunk)
        if (Result.isFailure(frames)) {
          stats.malformed++
          yield* Effect.logDebug("data exchange: bad frame, connection reset", from, frames.failure.message)
          return yield* connection.abort
        }
        for (const frame of frames.success) {
          const { reply: text } = yield* handle(frame, from)
          yield* reply(connection, text)
        }
      }
      if (splitter.bufferedBytes > 0) stats.malformed++
      yield* connection.close
    }).pipe(
      Effect.catch((error) =>
        Effect.gen(function*() {
          if (error instanceof Stalled) stats.stalled++
          else stats.failures++
          yield* connection.abort
        })),
      Effect.onInterrupt(() => connection.abort)
    )

  yield* forkAcceptLoop(listener, stats, maxConnections, serve)
  return { stats: (): DataExchangeStats => ({ ...stats }) }
})

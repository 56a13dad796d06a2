/**
 * pilotctl's mailbox and pub/sub commands (reference §10, §11): `send-message` and `send-file` talk to a node's
 * data-exchange service (port 1001), `subscribe` and `publish` to its event stream (port 1002), `inbox` and
 * `received` read what our own daemon saved under its data directory.
 *
 * Like the stream commands, each remote command holds one IPC session for its whole run (the daemon closes the
 * overlay connection with it). Frames larger than an IPC frame are sent as several `Send`s of 64 KiB; the reply
 * frames coming back as `Recv` pushes are reassembled with the same codecs the services use.
 *
 * `send-message` is fire-and-forget unless `--wait` (then it waits up to `--timeout` for the service's
 * `ACK`/`ERR` frame, and an `ERR` is an error); without `--wait`, `ack` is null. `send-file` always waits for the
 * ACK, since a file is only worth reporting as sent once it is saved.
 */
import { Console, type Duration, Effect, Result } from "effect"
import * as fsp from "node:fs/promises"
import * as os from "node:os"
import * as nodePath from "node:path"
import {
  DataFrameType,
  encodeDataFrame,
  encodeFilePayload,
  makeDataFrameSplitter,
  MAX_DATA_PAYLOAD,
  parseDataFrameTypeName
} from "../protocol/data-exchange.ts"
import { encodeEvent, makeEventSplitter } from "../protocol/event-stream.ts"
import { ctlError, type CtlError } from "./errors.ts"
import { ipcJson } from "./ipc-client.ts"
import { deadlineAfter, openStream, readConnection, type Stream } from "./overlay-stream.ts"

export const DATA_EXCHANGE_PORT = 1001
export const EVENT_STREAM_PORT = 1002
/** Bytes per IPC Send: far below the 1 MiB IPC frame limit. */
const SEND_CHUNK = 64 * 1024

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const sendAll = (stream: Stream, bytes: Uint8Array) =>
  Effect.gen(function*() {
    for (let offset = 0; offset < bytes.byteLength; offset += SEND_CHUNK) {
      yield* stream.session.send({ cmd: "Send", connId: stream.connId, data: bytes.subarray(offset, offset + SEND_CHUNK) })
    }
  })

/** Waits for the service's reply frame (its text). */
const awaitAck = (stream: Stream, timeout: Duration.Input) =>
  Effect.gen(function*() {
    const deadline = yield* deadlineAfter(timeout)
    const splitter = makeDataFrameSplitter()
    while (true) {
      const read = yield* readConnection(stream, deadline)
      if (read._tag === "timeout") return yield* ctlError("timeout", `no acknowledgement from ${stream.target} within the deadline`, "retry, or raise --timeout")
      if (read._tag === "closed") return yield* ctlError("connection_failed", `${stream.target} closed the connection before acknowledging`, "retry")
      const frames = splitter.push(read.data)
      if (Result.isFailure(frames)) return yield* ctlError("internal", `bad reply from ${stream.target}: ${frames.failure.message}`)
      const first = frames.success[0]
      if (first === undefined) continue
      const text = decoder.decode(first.payload)
      if (text.startsWith("ERR ")) return yield* ctlError("internal", `${stream.target} could not save it: ${text}`, "the receiving node's disk or data directory is failing")
      return text
    }
  })

const frameBytes = (type: DataFrameType, payload: Uint8Array): Effect.Effect<Uint8Array, CtlError> => {
  const frame = encodeDataFrame({ type, payload })
  return Result.isFailure(frame) ? Effect.fail(ctlError("invalid_argument", frame.failure.message)) : Effect.succeed(frame.success)
}

export const sendMessage = (socket: string, target: string, data: string, typeName: string, wait: boolean, timeout: Duration.Input) =>
  Effect.scoped(Effect.gen(function*() {
    const type = parseDataFrameTypeName(typeName)
    if (type === undefined || type === DataFrameType.File) {
      return yield* ctlError("invalid_argument", `--type "${typeName}" is not one of text, json, binary`, "use send-file for files")
    }
    if (type === DataFrameType.Json) {
      const parsed = yield* Effect.try({ try: () => JSON.parse(data) as unknown, catch: () => ctlError("invalid_argument", "--data is not valid JSON") })
      void parsed
    }
    const payload = encoder.encode(data)
    const frame = yield* frameBytes(type, payload)
    const stream = yield* openStream(socket, target, DATA_EXCHANGE_PORT, timeout)
    yield* sendAll(stream, frame)
    const ack = wait ? yield* awaitAck(stream, timeout) : null
    return { target: stream.target, type: typeName.toLowerCase(), bytes: payload.byteLength, ack }
  }))

export const sendFile = (socket: string, target: string, filePath: string, timeout: Duration.Input) =>
  Effect.scoped(Effect.gen(function*() {
    const data = yield* Effect.tryPromise({
      try: () => fsp.readFile(filePath),
      catch: (error) => {
        const code = (error as NodeJS.ErrnoException).code
        return code === "ENOENT"
          ? ctlError("not_found", `no file at ${filePath}`)
          : ctlError("invalid_argument", `cannot read ${filePath}: ${(error as Error).message}`)
      }
    })
    const filename = nodePath.basename(filePath)
    if (data.byteLength > MAX_DATA_PAYLOAD - 2 - encoder.encode(filename).byteLength) {
      return yield* ctlError("invalid_argument", `${filePath} is ${data.byteLength} bytes; at most 16 MiB fit one frame`)
    }
    const payload = encodeFilePayload({ name: filename, data })
    if (Result.isFailure(payload)) return yield* ctlError("invalid_argument", payload.failure.message)
    const frame = yield* frameBytes(DataFrameType.File, payload.success)
    const stream = yield* openStream(socket, target, DATA_EXCHANGE_PORT, timeout)
    yield* sendAll(stream, frame)
    const ack = yield* awaitAck(stream, timeout)
    return { filename, bytes: data.byteLength, destination: stream.target, ack }
  }))

// ---- local mailbox ------------------------------------------------------------------------------------------

/** The daemon's data directory from its Info reply (`data_dir`), `~/.pilot` when the daemon does not say. */
export const dataDirectory = (socket: string, timeout: Duration.Input) =>
  Effect.map(ipcJson(socket, { cmd: "Info" }, "InfoOK", timeout), (json) => {
    const dir = (json as { readonly data_dir?: unknown }).data_dir
    return typeof dir === "string" && dir !== "" ? dir : nodePath.join(os.homedir(), ".pilot")
  })

const fsError = (what: string) => (error: unknown) => ctlError("internal", `${what}: ${error instanceof Error ? error.message : String(error)}`)

/** Visible entries of `dir` (temp files of an atomic write start with a dot); none when it does not exist. */
const listDir = (dir: string) =>
  Effect.tryPromise({
    try: () => fsp.readdir(dir, { withFileTypes: true }),
    catch: (error) => error as NodeJS.ErrnoException
  }).pipe(
    Effect.map((entries) => entries.filter((e) => e.isFile() && !e.name.startsWith(".")).map((e) => e.name).sort()),
    Effect.catch((error) => error.code === "ENOENT" ? Effect.succeed<ReadonlyArray<string>>([]) : Effect.fail(fsError(`cannot list ${dir}`)(error)))
  )

const removeAll = (paths: ReadonlyArray<string>) =>
  Effect.forEach(paths, (p) => Effect.tryPromise({ try: () => fsp.rm(p, { force: true }), catch: fsError(`cannot remove ${p}`) }), { discard: true })

export const inbox = (socket: string, clear: boolean, timeout: Duration.Input) =>
  Effect.gen(function*() {
    const dir = nodePath.join(yield* dataDirectory(socket, timeout), "inbox")
    const names = (yield* listDir(dir)).filter((n) => n.endsWith(".json"))
    const messages: Array<{ readonly type: unknown; readonly from: unknown; readonly data: unknown; readonly bytes: unknown; readonly received_at: unknown }> = []
    for (const name of names) {
      const text = yield* Effect.tryPromise({ try: () => fsp.readFile(nodePath.join(dir, name), "utf8"), catch: fsError(`cannot read ${name}`) })
      const record = yield* Effect.try({ try: () => JSON.parse(text) as Record<string, unknown>, catch: () => undefined }).pipe(Effect.orElseSucceed(() => undefined))
      if (record === undefined) continue
      messages.push({ type: record["type"], from: record["from"], data: record["data"], bytes: record["bytes"], received_at: record["received_at"] })
    }
    messages.sort((a, b) => String(a.received_at).localeCompare(String(b.received_at)))
    if (clear) yield* removeAll(names.map((n) => nodePath.join(dir, n)))
    return { messages, total: messages.length, dir, ...(clear ? { cleared: names.length } : {}) }
  })

export const received = (socket: string, clear: boolean, timeout: Duration.Input) =>
  Effect.gen(function*() {
    const dir = nodePath.join(yield* dataDirectory(socket, timeout), "received")
    const names = yield* listDir(dir)
    const files = yield* Effect.forEach(names, (name) => {
      const path = nodePath.join(dir, name)
      return Effect.map(
        Effect.tryPromise({ try: () => fsp.stat(path), catch: fsError(`cannot stat ${name}`) }),
        (stat) => ({ name, bytes: stat.size, modified: stat.mtime.toISOString(), path })
      )
    })
    if (clear) yield* removeAll(files.map((f) => f.path))
    return { files, total: files.length, dir, ...(clear ? { cleared: files.length } : {}) }
  })

// ---- pub/sub ------------------------------------------------------------------------------------------------

const eventBytes = (topic: string, payload: Uint8Array): Effect.Effect<Uint8Array, CtlError> => {
  const event = encodeEvent({ topic, payload })
  return Result.isFailure(event) ? Effect.fail(ctlError("invalid_argument", event.failure.message)) : Effect.succeed(event.success)
}

export const publish = (socket: string, target: string, topic: string, data: string, timeout: Duration.Input) =>
  Effect.scoped(Effect.gen(function*() {
    const payload = encoder.encode(data)
    // The first event on a connection is its subscription; the publication follows in the same write.
    const subscription = yield* eventBytes(topic, new Uint8Array())
    const publication = yield* eventBytes(topic, payload)
    const both = new Uint8Array(subscription.byteLength + publication.byteLength)
    both.set(subscription)
    both.set(publication, subscription.byteLength)
    const stream = yield* openStream(socket, target, EVENT_STREAM_PORT, timeout)
    yield* sendAll(stream, both)
    return { target: stream.target, topic, bytes: payload.byteLength }
  }))

export interface ReceivedEvent {
  readonly topic: string
  readonly data: string
  readonly bytes: number
}

/**
 * Subscribes and collects events: until `count` arrived or `deadline` passed (bounded), or — with neither — prints
 * each event as one NDJSON line as it arrives, until the peer closes (`onEvent`).
 */
export const subscribe = (
  socket: string,
  target: string,
  topic: string,
  bounds: { readonly count: number | undefined; readonly wait: Duration.Input | undefined },
  timeout: Duration.Input
) =>
  Effect.scoped(Effect.gen(function*() {
    const stream = yield* openStream(socket, target, EVENT_STREAM_PORT, timeout)
    yield* sendAll(stream, yield* eventBytes(topic, new Uint8Array()))
    const streaming = bounds.count === undefined && bounds.wait === undefined
    const deadline = bounds.wait === undefined ? undefined : yield* deadlineAfter(bounds.wait)
    const splitter = makeEventSplitter()
    const events: Array<ReceivedEvent> = []
    let ended: "count" | "timeout" | "closed"
    collect: while (true) {
      const read = yield* readConnection(stream, deadline)
      if (read._tag !== "data") {
        ended = read._tag
        break
      }
      const decoded = splitter.push(read.data)
      if (Result.isFailure(decoded)) return yield* ctlError("internal", `bad event from ${stream.target}: ${decoded.failure.message}`)
      for (const event of decoded.success) {
        const received: ReceivedEvent = { topic: event.topic, data: decoder.decode(event.payload), bytes: event.payload.byteLength }
        if (streaming) yield* Console.log(JSON.stringify(received))
        else events.push(received)
        if (bounds.count !== undefined && events.length >= bounds.count) {
          ended = "count"
          break collect
        }
      }
    }
    return { target: stream.target, topic, events, total: events.length, timeout: ended === "timeout", streamed: streaming }
  }))

/**
 * The stream commands of `pilotctl` (reference §10 "Communication" and "Diagnostics"): connect, send, recv, ping
 * and bench. Each holds one IPC session for its whole run — the daemon ties dialed connections and bound ports to
 * the IPC connection that made them, and closes them when it goes — so a command that fails half-way leaves
 * nothing open behind it.
 *
 * `--timeout` bounds each wait for the daemon or the peer (for `recv`: the whole wait for messages).
 */
import { Clock, Duration, Effect } from "effect"
import { WellKnownPort } from "../protocol/packet.ts"
import { ctlError } from "./errors.ts"
import { openSession } from "./ipc-client.ts"
import { deadlineAfter, nextMatching, openStream, readConnection, type Stream } from "./overlay-stream.ts"

export { literalTarget, resolveTarget } from "./overlay-stream.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Reads until `length` bytes came back (the echo service may split or merge chunks). */
const readExactly = (stream: Stream, length: number, deadline: number, what: string) =>
  Effect.gen(function*() {
    let received = 0
    while (received < length) {
      const read = yield* readConnection(stream, deadline)
      if (read._tag === "timeout") return yield* ctlError("timeout", `${what}: ${received} of ${length} bytes came back before the deadline`, "retry, or raise --timeout")
      if (read._tag === "closed") return yield* ctlError("connection_failed", `${what}: the peer closed the connection after ${received} of ${length} bytes`, "retry")
      received += read.data.byteLength
    }
  })

const sendText = (stream: Stream, data: Uint8Array) => stream.session.send({ cmd: "Send", connId: stream.connId, data })

export const connect = (socket: string, target: string, port: number, message: string, timeout: Duration.Input) =>
  Effect.scoped(Effect.gen(function*() {
    const stream = yield* openStream(socket, target, port, timeout)
    yield* sendText(stream, encoder.encode(message))
    const read = yield* readConnection(stream, yield* deadlineAfter(timeout))
    return { target: stream.target, port, sent: message, response: read._tag === "data" ? decoder.decode(read.data) : null }
  }))

export const send = (socket: string, target: string, port: number, data: string, timeout: Duration.Input) =>
  Effect.scoped(Effect.gen(function*() {
    const stream = yield* openStream(socket, target, port, timeout)
    const bytes = encoder.encode(data)
    yield* sendText(stream, bytes)
    return { target: stream.target, port, bytes: bytes.byteLength }
  }))

export const recv = (socket: string, port: number, count: number, timeout: Duration.Input) =>
  Effect.scoped(Effect.gen(function*() {
    const session = yield* openSession(socket)
    yield* session.request({ cmd: "Bind", port }, "BindOK", timeout)
    const deadline = yield* deadlineAfter(timeout)
    const messages: Array<{ readonly seq: number; readonly port: number; readonly data: string; readonly bytes: number }> = []
    while (messages.length < count) {
      const data = yield* nextMatching(session, deadline, (message) => message.cmd === "Recv" ? message.data : undefined)
      if (data === undefined) return { messages, timeout: true }
      messages.push({ seq: messages.length + 1, port, data: decoder.decode(data), bytes: data.byteLength })
    }
    return { messages, timeout: false }
  }))

export const ping = (socket: string, target: string, count: number, timeout: Duration.Input) =>
  Effect.scoped(Effect.gen(function*() {
    const stream = yield* openStream(socket, target, WellKnownPort.Echo, timeout)
    const results: Array<{ readonly seq: number; readonly rtt_ms: number }> = []
    for (let seq = 1; seq <= count; seq++) {
      const payload = encoder.encode(`ping ${seq}`)
      const start = yield* Clock.currentTimeMillis
      yield* sendText(stream, payload)
      yield* readExactly(stream, payload.byteLength, start + Duration.toMillis(timeout), `ping ${seq}`)
      results.push({ seq, rtt_ms: (yield* Clock.currentTimeMillis) - start })
    }
    const rtts = results.map((r) => r.rtt_ms)
    return {
      target: stream.target,
      results,
      sent: count,
      received: results.length,
      min_rtt_ms: Math.min(...rtts),
      avg_rtt_ms: rtts.reduce((a, b) => a + b, 0) / rtts.length,
      max_rtt_ms: Math.max(...rtts)
    }
  }))

/** Bench writes in frames of this size: well under the 1 MiB IPC frame limit, big enough to keep frames few. */
const BENCH_CHUNK = 64 * 1024

const mbps = (bytes: number, ms: number) => ms === 0 ? 0 : Math.round((bytes * 8) / (ms * 1000) * 100) / 100

export const bench = (socket: string, target: string, sizeMb: number, timeout: Duration.Input) =>
  Effect.scoped(Effect.gen(function*() {
    const stream = yield* openStream(socket, target, WellKnownPort.Echo, timeout)
    const total = Math.round(sizeMb * 1024 * 1024)
    const chunk = new Uint8Array(BENCH_CHUNK).map((_, i) => i & 0xff)
    const start = yield* Clock.currentTimeMillis
    // Reading the echo happens alongside the sending: the session buffers pushes while sends are in flight.
    for (let offset = 0; offset < total; offset += BENCH_CHUNK) yield* sendText(stream, chunk.subarray(0, Math.min(BENCH_CHUNK, total - offset)))
    const sentAt = yield* Clock.currentTimeMillis
    yield* readExactly(stream, total, sentAt + Duration.toMillis(timeout), "bench")
    const doneAt = yield* Clock.currentTimeMillis
    return { target: stream.target, bytes: total, send_ms: sentAt - start, total_ms: doneAt - start, send_mbps: mbps(total, sentAt - start), total_mbps: mbps(total, doneAt - start) }
  }))

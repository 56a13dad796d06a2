/**
 * A closed-loop load generator for length-prefixed request/response protocols (the registry, the daemon's IPC
 * socket, the echo baseline): each connection keeps exactly one request in flight — send, wait for the reply,
 * send the next — as the registry protocol requires (replies carry no request ID, only their order).
 *
 * Deliberately plain `node:net` with callbacks, no Effect and no per-request promise: the client shares the
 * machine's two cores with the server, so it must cost as little as possible, and it must cost the same
 * whatever server it drives, which makes ratios between servers meaningful.
 *
 * Every reply is checked against an expected prefix (e.g. `{"type":"lookup_ok"`): an error reply — a rate
 * limit, a missing node — fails the run instead of being counted as a fast success.
 */
import * as net from "node:net"
import { makeFrameSplitter } from "../../src/protocol/length-prefixed.ts"

export interface LoadResult {
  /** Replies received. */
  readonly ops: number
  /** From the first request to the last reply. */
  readonly elapsedMs: number
  /** Whether `nextFrame` ran dry before the time was up (the sample is then shorter than asked). */
  readonly exhausted: boolean
}

export const opsPerSecond = (result: LoadResult): number => (result.ops * 1000) / result.elapsedMs

/** Opens `count` loopback connections (Nagle off), outside any timed section. */
export const openConnections = (port: number, count: number): Promise<Array<net.Socket>> =>
  Promise.all(
    Array.from({ length: count }, () =>
      new Promise<net.Socket>((resolve, reject) => {
        const socket = net.createConnection({ host: "127.0.0.1", port, noDelay: true })
        socket.once("connect", () => {
          socket.off("error", reject)
          resolve(socket)
        })
        socket.once("error", reject)
      }))
  )

export const closeConnections = async (sockets: ReadonlyArray<net.Socket>): Promise<void> => {
  await Promise.all(sockets.map((socket) =>
    new Promise<void>((resolve) => {
      if (socket.destroyed) return resolve()
      socket.once("close", () => resolve())
      socket.destroy()
    })))
}

const startsWith = (body: Uint8Array, prefix: Uint8Array) => {
  if (body.byteLength < prefix.byteLength) return false
  for (let i = 0; i < prefix.byteLength; i++) if (body[i] !== prefix[i]) return false
  return true
}

export interface LoadOptions {
  /** The next request frame (prefix included), or `undefined` when the supply is exhausted. Shared by all connections. */
  readonly nextFrame: () => Uint8Array | undefined
  /** Every reply body must start with these bytes. */
  readonly expectedReplyPrefix: Uint8Array
  readonly durationMs: number
}

/**
 * Drives every connection for `durationMs`: requests stop being *sent* at the deadline, and each connection's
 * last reply is still awaited, so `elapsedMs` covers exactly the replies counted.
 */
export const driveRoundTrips = (sockets: ReadonlyArray<net.Socket>, options: LoadOptions): Promise<LoadResult> =>
  new Promise<LoadResult>((resolve, reject) => {
    const { nextFrame, expectedReplyPrefix } = options
    let ops = 0
    let active = sockets.length
    let exhausted = false
    let failed = false
    const cleanups: Array<() => void> = []
    const start = performance.now()
    const deadline = start + options.durationMs

    const finish = (error?: Error) => {
      if (failed) return
      if (error !== undefined) {
        failed = true
        for (const cleanup of cleanups) cleanup()
        return reject(error)
      }
      if (--active > 0) return
      const elapsedMs = performance.now() - start
      for (const cleanup of cleanups) cleanup()
      resolve({ ops, elapsedMs, exhausted })
    }

    for (const socket of sockets) {
      const splitter = makeFrameSplitter()
      const sendNext = () => {
        const frame = performance.now() < deadline ? nextFrame() : undefined
        if (frame === undefined) {
          if (performance.now() < deadline) exhausted = true
          return finish()
        }
        socket.write(frame)
      }
      const onData = (chunk: Buffer) => {
        const bodies = splitter.push(chunk)
        if (bodies._tag === "Failure") return finish(new Error(`unframeable reply: ${bodies.failure.message}`))
        for (const body of bodies.success) {
          if (!startsWith(body, expectedReplyPrefix)) {
            return finish(new Error(`unexpected reply ${Buffer.from(body).toString("utf8").slice(0, 300)}`))
          }
          ops++
          sendNext()
        }
      }
      const onError = (error: Error) => finish(error)
      const onClose = () => finish(new Error("the server closed a connection mid-run"))
      socket.on("data", onData)
      socket.once("error", onError)
      socket.once("close", onClose)
      cleanups.push(() => {
        socket.off("data", onData)
        socket.off("error", onError)
        socket.off("close", onClose)
      })
    }
    for (const socket of sockets) {
      const frame = nextFrame()
      if (frame === undefined) {
        exhausted = true
        finish()
      } else {
        socket.write(frame)
      }
    }
  })

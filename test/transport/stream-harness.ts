/**
 * Two stream endpoints over a `SimulatedNetwork`: A dials B, each writes its bytes in random-sized writes
 * (honouring `send_buffer_full` / `writable`), reads everything it is given, and closes. Every segment
 * travels as real packet bytes (`encodePacket` / `decodePacket`), so the 1:1 mapping a shell does is part
 * of the test. The harness is strict: it throws (with the seed and conditions) the moment a delivered byte
 * differs from what was sent, a buffer exceeds its cap, or nothing has progressed for `stallLimitMs` of
 * virtual time; a run that ends otherwise returns a report for the test to judge.
 */
import { Result } from "effect"
import { makeAddr } from "../../src/protocol/address.ts"
import { decodePacket, encodePacket, PacketFlag } from "../../src/protocol/packet.ts"
import { OUT_OF_ORDER_CAPACITY, RECEIVE_BUFFER_BYTES } from "../../src/transport/reassembly.ts"
import { type Endpoints, fromPacket, resetFor, type Segment, toPacket, WINDOW_UNIT_BYTES } from "../../src/transport/segment.ts"
import {
  MAX_OUTSTANDING_SEGMENTS,
  SEND_BUFFER_SEGMENTS,
  StreamConnection,
  type StreamFailure,
  type StreamInfo,
  type StreamOptions,
  type StreamStep
} from "../../src/transport/stream.ts"
import { type LinkConditions, Rng, type Scheduled, SimulatedNetwork } from "./simulated-network.ts"

export interface TransferPlan {
  readonly seed: number
  readonly conditions: LinkConditions
  readonly aToB: Uint8Array
  readonly bToA: Uint8Array
  /** Application writes are 1..maxWriteBytes long. */
  readonly maxWriteBytes: number
  readonly optionsA?: StreamOptions
  readonly optionsB?: StreamOptions
  /** B closes once it has written everything, or only after A's FIN too. A always closes after writing. */
  readonly listenerCloses: "after_writing" | "after_peer_closed"
  /** Delay before the application reads delivered bytes (0: at once). */
  readonly readerDelayMs?: number
  readonly stallLimitMs?: number
  readonly timeLimitMs?: number
  /** Packet-level trace (see `SimulatedNetwork`), for debugging one seed. */
  readonly trace?: (line: string) => void
}

export type SideOutcome = "closed" | StreamFailure | "still_open" | "never_opened"

export interface SideReport {
  readonly outcome: SideOutcome
  readonly received: number
  readonly peerClosed: boolean
  readonly info: StreamInfo | undefined
}

export interface TransferReport {
  readonly a: SideReport
  readonly b: SideReport
  readonly endedAt: number
  readonly describe: string
}

const DEFAULT_STALL_LIMIT_MS = 10 * 60_000
const DEFAULT_TIME_LIMIT_MS = 6 * 60 * 60_000

const ENDPOINTS_A: Endpoints = { local: makeAddr(0, 10), localPort: 49152, remote: makeAddr(0, 20), remotePort: 1001 }
const ENDPOINTS_B: Endpoints = { local: makeAddr(0, 20), localPort: 1001, remote: makeAddr(0, 10), remotePort: 49152 }

const FLAG_NAMES: ReadonlyArray<[number, string]> = [
  [PacketFlag.SYN, "SYN"],
  [PacketFlag.ACK, "ACK"],
  [PacketFlag.FIN, "FIN"],
  [PacketFlag.RST, "RST"]
]

export const formatSegment = (segment: Segment): string => {
  const flags = FLAG_NAMES.filter(([bit]) => (segment.flags & bit) !== 0).map(([, name]) => name).join("|")
  return `${flags} seq=${segment.seq} ack=${segment.ack} win=${segment.window} len=${segment.payload.byteLength}`
}

class Side {
  connection: StreamConnection | undefined = undefined
  written = 0
  received = 0
  peerClosed = false
  closeCalled = false
  failure: StreamFailure | undefined = undefined
  timer: Scheduled | undefined = undefined
  timerAt: number | undefined = undefined
  lastOutstanding = 0
  readonly name: string
  readonly peer: string
  readonly endpoints: Endpoints
  readonly toSend: Uint8Array
  readonly expected: Uint8Array
  readonly options: StreamOptions

  constructor(name: string, peer: string, endpoints: Endpoints, toSend: Uint8Array, expected: Uint8Array, options: StreamOptions) {
    this.name = name
    this.peer = peer
    this.endpoints = endpoints
    this.toSend = toSend
    this.expected = expected
    this.options = options
  }

  report(): SideReport {
    const connection = this.connection
    const outcome: SideOutcome = connection === undefined
      ? "never_opened"
      : this.failure ?? (connection.state === "CLOSED" ? "closed" : "still_open")
    return { outcome, received: this.received, peerClosed: this.peerClosed, info: connection?.info() }
  }
}

export const runTransfer = (plan: TransferPlan): TransferReport => {
  const trace = plan.trace
  const network = new SimulatedNetwork<Uint8Array>({
    seed: plan.seed,
    conditions: plan.conditions,
    ...(trace === undefined ? {} : {
      trace: (kind, at, from, to, bytes) => {
        const decoded = decodePacket(bytes)
        if (Result.isSuccess(decoded)) trace(`${at.toFixed(1)} ${from}>${to} ${kind} ${formatSegment(fromPacket(decoded.success))}`)
      }
    })
  })
  const app = new Rng(plan.seed ^ 0x5bd1e995)
  const a = new Side("A", "B", ENDPOINTS_A, plan.aToB, plan.bToA, plan.optionsA ?? {})
  const b = new Side("B", "A", ENDPOINTS_B, plan.bToA, plan.aToB, plan.optionsB ?? {})
  const stallLimit = plan.stallLimitMs ?? DEFAULT_STALL_LIMIT_MS
  let lastProgressAt = 0

  const fail = (message: string): never => {
    throw new Error(`${message} [${network.describe()}]`)
  }

  const sendSegment = (side: Side, segment: Segment) =>
    network.send(side.name, side.peer, encodePacket(toPacket(segment, side.endpoints)))

  const checkBounds = (side: Side, connection: StreamConnection) => {
    const usage = connection.usage()
    const mss = connection.mss
    if (usage.unsentBytes > SEND_BUFFER_SEGMENTS * mss) fail(`${side.name} unsent ${usage.unsentBytes} over cap`)
    if (usage.outstandingSegments > MAX_OUTSTANDING_SEGMENTS) fail(`${side.name} outstanding ${usage.outstandingSegments}`)
    if (usage.outOfOrderSegments > OUT_OF_ORDER_CAPACITY) fail(`${side.name} out-of-order ${usage.outOfOrderSegments}`)
    const receiveCap = (side.options.receiveBufferBytes ?? RECEIVE_BUFFER_BYTES) + WINDOW_UNIT_BYTES
    if (usage.unreadBytes + usage.outOfOrderBytes > receiveCap) {
      fail(`${side.name} receive memory ${usage.unreadBytes + usage.outOfOrderBytes} over cap`)
    }
    if (usage.outstandingSegments < side.lastOutstanding) lastProgressAt = network.now
    side.lastOutstanding = usage.outstandingSegments
  }

  const deliver = (side: Side, chunk: Uint8Array) => {
    const offset = side.received
    if (offset + chunk.byteLength > side.expected.byteLength) {
      fail(`${side.name} received ${offset + chunk.byteLength} bytes, more than the ${side.expected.byteLength} sent`)
    }
    for (let i = 0; i < chunk.byteLength; i++) {
      if (chunk[i] !== side.expected[offset + i]) fail(`${side.name} byte ${offset + i} corrupted`)
    }
    side.received += chunk.byteLength
    lastProgressAt = network.now
  }

  const later = (action: () => void, delay = 0) => network.schedule(network.now + delay, action)

  const handle = (side: Side, step: StreamStep): void => {
    const connection = side.connection as StreamConnection
    for (const segment of step.segments) sendSegment(side, segment)
    let deliveredBytes = 0
    for (const chunk of step.delivered) {
      deliver(side, chunk)
      deliveredBytes += chunk.byteLength
    }
    if (deliveredBytes > 0) {
      later(() => {
        if (connection.state !== "CLOSED") handle(side, connection.consume(deliveredBytes, network.now))
      }, plan.readerDelayMs ?? 0)
    }
    for (const event of step.events) {
      switch (event.type) {
        case "state_changed":
          lastProgressAt = network.now
          if (event.to === "ESTABLISHED") later(() => writeSome(side))
          break
        case "peer_closed":
          if (side.received !== side.expected.byteLength) {
            fail(`${side.name} saw the end of stream after ${side.received} of ${side.expected.byteLength} bytes`)
          }
          side.peerClosed = true
          later(() => maybeClose(side))
          break
        case "writable":
          later(() => writeSome(side))
          break
        case "failed":
          side.failure = event.error.reason
          break
      }
    }
    checkBounds(side, connection)
    if (network.now - lastProgressAt > stallLimit) fail(`no progress for ${stallLimit} ms`)
    armTimer(side, step.nextDeadline)
  }

  const armTimer = (side: Side, deadline: number | undefined) => {
    if (deadline === side.timerAt) return
    if (side.timer !== undefined) side.timer.cancelled = true
    side.timerAt = deadline
    side.timer = deadline === undefined ? undefined : network.schedule(deadline, () => {
      side.timer = undefined
      side.timerAt = undefined
      const connection = side.connection as StreamConnection
      handle(side, connection.tick(network.now))
    })
  }

  const writeSome = (side: Side) => {
    const connection = side.connection
    if (connection === undefined) return
    while (side.written < side.toSend.byteLength) {
      const size = Math.min(app.int(1, plan.maxWriteBytes), side.toSend.byteLength - side.written)
      const step = connection.write(side.toSend.subarray(side.written, side.written + size), network.now)
      side.written += step.accepted
      if (step.accepted > 0) lastProgressAt = network.now
      handle(side, step)
      if (step.outcome !== "accepted") return
    }
    maybeClose(side)
  }

  const maybeClose = (side: Side) => {
    const connection = side.connection
    if (connection === undefined || side.closeCalled || side.written < side.toSend.byteLength) return
    if (side === b && plan.listenerCloses === "after_peer_closed" && !side.peerClosed) return
    if (connection.state !== "ESTABLISHED" && connection.state !== "CLOSE_WAIT") return
    side.closeCalled = true
    handle(side, connection.close(network.now))
  }

  const receive = (side: Side, bytes: Uint8Array) => {
    const decoded = decodePacket(bytes)
    if (Result.isFailure(decoded)) return fail(`undecodable packet: ${decoded.failure.message}`)
    const segment = fromPacket(decoded.success)
    const connection = side.connection
    if (connection === undefined && side === b && segment.flags === PacketFlag.SYN) {
      const accepted = StreamConnection.accept(segment, network.now, side.options)
      side.connection = accepted.connection
      handle(side, accepted.step)
      return
    }
    if (connection === undefined || connection.state === "CLOSED") {
      // What a shell does for a segment that reaches no connection.
      const reset = resetFor(segment)
      if (reset !== undefined) sendSegment(side, reset)
      return
    }
    handle(side, connection.receive(segment, network.now))
  }

  network.attach("A", (bytes) => receive(a, bytes))
  network.attach("B", (bytes) => receive(b, bytes))
  const dialed = StreamConnection.dial(0, a.options)
  a.connection = dialed.connection
  handle(a, dialed.step)

  const finished = () =>
    a.connection?.state === "CLOSED" && (b.connection === undefined || b.connection.state === "CLOSED")
  const outcome = network.run(finished, plan.timeLimitMs ?? DEFAULT_TIME_LIMIT_MS)
  if (outcome !== "done") fail(`run ended "${outcome}" with A ${a.connection?.state} and B ${b.connection?.state}`)
  return { a: a.report(), b: b.report(), endedAt: network.now, describe: network.describe() }
}

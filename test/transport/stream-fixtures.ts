/**
 * Helpers for driving `StreamConnection`s by hand in unit tests: segment builders, a dialer established
 * against a scripted peer, and a loss-free `Wire` between two real connections that delivers segments on
 * demand (so a test can drop, hold or reorder exactly the ones it names).
 */
import { Result } from "effect"
import { concat } from "../protocol/framing-properties.ts"
import { PacketFlag } from "../../src/protocol/packet.ts"
import { decodeSack, type SackBlock } from "../../src/transport/sack.ts"
import { EMPTY_PAYLOAD, type Segment } from "../../src/transport/segment.ts"
import { StreamConnection, type StreamEvent, type StreamOptions, type StreamStep } from "../../src/transport/stream.ts"

export const { SYN, ACK, FIN, RST } = PacketFlag

/** The scripted peer's initial sequence number: distinct from ours so that mix-ups show. */
export const PEER_ISN = 5000
export const FULL_WINDOW = 1024

export const segment = (
  flags: number,
  seq: number,
  ack: number,
  payload: Uint8Array = EMPTY_PAYLOAD,
  window: number = FULL_WINDOW
): Segment => ({ flags, seq, ack, window, payload })

export const bytes = (length: number, seed = 1): Uint8Array => {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff
  return out
}

export const ascii = (text: string): Uint8Array => new TextEncoder().encode(text)

export { concat }

export const dataSegments = (step: StreamStep): Array<Segment> =>
  step.segments.filter((s) => s.payload.byteLength > 0 && s.flags === ACK && !isSack(s))

export const pureAcks = (step: StreamStep): Array<Segment> =>
  step.segments.filter((s) => s.flags === ACK && (s.payload.byteLength === 0 || isSack(s)))

export const isSack = (s: Segment): boolean => Result.isSuccess(decodeSack(s.payload))

export const sackOf = (s: Segment): ReadonlyArray<SackBlock> => Result.getOrThrow(decodeSack(s.payload))

export const failures = (step: StreamStep): Array<string> =>
  step.events.flatMap((e) => (e.type === "failed" ? [e.error.reason] : []))

export const hasEvent = (step: StreamStep, type: StreamEvent["type"]): boolean =>
  step.events.some((e) => e.type === type)

/**
 * A dialer that completed its handshake with a scripted peer (ISN `PEER_ISN`) at time `now`, which
 * advertised `peerWindow`. Our data starts at sequence `isn + 1`, the peer's at `PEER_ISN + 1`.
 */
export const dialed = (options: StreamOptions = {}, peerWindow = FULL_WINDOW, now = 0) => {
  const { connection } = StreamConnection.dial(now, options)
  const isn = options.isn ?? 0
  const step = connection.receive(segment(SYN | ACK, PEER_ISN, (isn + 1) >>> 0, EMPTY_PAYLOAD, peerWindow), now)
  return { connection, step, firstSeq: (isn + 1) >>> 0, peerSeq: PEER_ISN + 1 }
}

type Side = "a" | "b"

/**
 * Two real connections and the segments in flight between them. `a` dials, `b` accepts. Nothing moves
 * until the test calls `deliver` / `drop`; every step's outputs are recorded per side.
 */
export class Wire {
  readonly a: StreamConnection
  b: StreamConnection | undefined = undefined
  readonly inFlight: Record<Side, Array<Segment>> = { a: [], b: [] }
  readonly received: Record<Side, Array<Uint8Array>> = { a: [], b: [] }
  readonly events: Record<Side, Array<StreamEvent>> = { a: [], b: [] }
  readonly optionsB: StreamOptions

  constructor(optionsA: StreamOptions = {}, optionsB: StreamOptions = {}, now = 0) {
    this.optionsB = optionsB
    const { connection, step } = StreamConnection.dial(now, optionsA)
    this.a = connection
    this.record("a", step)
  }

  /** Runs the handshake to completion without loss. */
  static established(optionsA: StreamOptions = {}, optionsB: StreamOptions = {}, now = 0): Wire {
    const wire = new Wire(optionsA, optionsB, now)
    wire.settle(now)
    return wire
  }

  connection(side: Side): StreamConnection {
    const connection = side === "a" ? this.a : this.b
    if (connection === undefined) throw new Error(`side ${side} has no connection yet`)
    return connection
  }

  record(side: Side, step: StreamStep): StreamStep {
    // Segments sent by `side` travel towards the other side.
    this.inFlight[side].push(...step.segments)
    this.received[side].push(...step.delivered)
    this.events[side].push(...step.events)
    return step
  }

  /** Delivers the oldest segment `from` sent; returns it. */
  deliverOne(from: Side, now: number): Segment {
    const segment = this.inFlight[from].shift()
    if (segment === undefined) throw new Error(`nothing in flight from ${from}`)
    this.#arrive(from === "a" ? "b" : "a", segment, now)
    return segment
  }

  /** Drops the oldest segment `from` sent; returns it. */
  drop(from: Side): Segment {
    const segment = this.inFlight[from].shift()
    if (segment === undefined) throw new Error(`nothing in flight from ${from}`)
    return segment
  }

  /** Delivers everything in flight, both ways, until nothing moves (no timers run). */
  settle(now: number): void {
    while (this.inFlight.a.length + this.inFlight.b.length > 0) {
      if (this.inFlight.a.length > 0) this.deliverOne("a", now)
      if (this.inFlight.b.length > 0) this.deliverOne("b", now)
    }
  }

  tick(side: Side, now: number): StreamStep {
    return this.record(side, this.connection(side).tick(now))
  }

  write(side: Side, data: Uint8Array, now: number): StreamStep {
    return this.record(side, this.connection(side).write(data, now))
  }

  close(side: Side, now: number): StreamStep {
    return this.record(side, this.connection(side).close(now))
  }

  receivedBytes(side: Side): Uint8Array {
    return concat(this.received[side])
  }

  #arrive(to: Side, segment: Segment, now: number): void {
    if (to === "b" && this.b === undefined) {
      const { connection, step } = StreamConnection.accept(segment, now, this.optionsB)
      this.b = connection
      this.record("b", step)
      return
    }
    this.record(to, this.connection(to).receive(segment, now))
  }
}

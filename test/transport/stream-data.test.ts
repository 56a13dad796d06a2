import { describe, expect, it } from "@effect/vitest"
import { encodeSack } from "../../src/transport/sack.ts"
import type { Segment } from "../../src/transport/segment.ts"
import {
  DELAYED_ACK_MS,
  NAGLE_DELAY_MS,
  RETRANSMIT_BUDGET,
  SEND_BUFFER_SEGMENTS,
  type StreamConnection,
  type StreamStep,
  ZERO_WINDOW_PROBE_LIMIT
} from "../../src/transport/stream.ts"
import {
  ACK,
  ascii,
  bytes,
  concat,
  dataSegments,
  dialed,
  failures,
  hasEvent,
  isSack,
  PEER_ISN,
  pureAcks,
  RST,
  sackOf,
  segment,
  Wire
} from "./stream-fixtures.ts"

const PEER_SEQ = PEER_ISN + 1
const MSS = 4096

const shape = (segments: ReadonlyArray<Segment>) => segments.map((s) => [s.seq, s.payload.byteLength])
/** flags, seq, ack of each segment (the window depends on how much the test has read). */
const headers = (step: StreamStep) => step.segments.map((s) => [s.flags, s.seq, s.ack])

/** Ticks at each deadline until `stop` says so (or 1 h of virtual time); returns the steps with their times. */
const tickUntil = (connection: StreamConnection, from: StreamStep, stop: (step: StreamStep) => boolean) => {
  const steps: Array<readonly [number, StreamStep]> = []
  let deadline = from.nextDeadline
  while (deadline !== undefined && deadline < 3_600_000) {
    const step = connection.tick(deadline)
    steps.push([deadline, step])
    if (stop(step)) break
    deadline = step.nextDeadline
  }
  return steps
}

describe("segmentation and Nagle", () => {
  it("cuts a large write into MSS segments with consecutive sequence numbers", () => {
    const { connection } = dialed({ noDelay: true })
    const step = connection.write(bytes(10_000), 1)
    expect(shape(dataSegments(step))).toEqual([[1, 4096], [4097, 4096], [8193, 1808]])
    expect(step.segments.every((s) => s.flags === ACK && s.ack === PEER_SEQ)).toBe(true)
  })

  it("Nagle: a small write goes at once when nothing is outstanding; later ones wait and coalesce until the ACK", () => {
    const { connection } = dialed()
    expect(shape(dataSegments(connection.write(bytes(100), 1)))).toEqual([[1, 100]])
    expect(connection.write(bytes(100), 2).segments).toEqual([])
    const held = connection.write(bytes(50), 3)
    expect(held.segments).toEqual([])
    expect(held.nextDeadline).toBe(2 + NAGLE_DELAY_MS)
    const acked = connection.receive(segment(ACK, PEER_SEQ, 101), 20)
    expect(shape(dataSegments(acked))).toEqual([[101, 150]])
  })

  it(`Nagle: held bytes go after ${NAGLE_DELAY_MS} ms without an ACK`, () => {
    const { connection } = dialed()
    connection.write(bytes(100), 1)
    const held = connection.write(bytes(100), 2)
    expect(connection.tick(held.nextDeadline! - 1).segments).toEqual([])
    expect(shape(dataSegments(connection.tick(held.nextDeadline!)))).toEqual([[101, 100]])
  })

  it("Nagle: full segments go at once even with data outstanding", () => {
    const { connection } = dialed()
    connection.write(bytes(100), 1)
    expect(shape(dataSegments(connection.write(bytes(5_000), 2)))).toEqual([[101, 4096]])
  })

  it("noDelay sends every small write at once", () => {
    const { connection } = dialed({ noDelay: true })
    const sent = [1, 2, 3].flatMap((t) => shape(dataSegments(connection.write(bytes(10), t))))
    expect(sent).toEqual([[1, 10], [11, 10], [21, 10]])
  })
})

describe("acknowledgments", () => {
  const data = (offset: number, length: number) => segment(ACK, PEER_SEQ + offset, 1, bytes(length, offset))

  it(`delays the ACK of one in-order segment by ${DELAYED_ACK_MS} ms and acknowledges two at once`, () => {
    const { connection } = dialed()
    const first = connection.receive(data(0, 100), 10)
    expect(first.segments).toEqual([])
    expect(first.nextDeadline).toBe(10 + DELAYED_ACK_MS)
    expect(headers(connection.receive(data(100, 100), 20))).toEqual([[ACK, 1, PEER_SEQ + 200]])
    connection.receive(data(200, 100), 30)
    expect(headers(connection.tick(30 + DELAYED_ACK_MS))).toEqual([[ACK, 1, PEER_SEQ + 300]])
  })

  it("acknowledges out-of-order data at once, with SACK, and the segment filling the gap at once, without", () => {
    const { connection } = dialed()
    const ooo = connection.receive(data(100, 100), 10)
    expect(pureAcks(ooo).map((s) => [s.ack, isSack(s)])).toEqual([[PEER_SEQ, true]])
    expect(sackOf(ooo.segments[0]!)).toEqual([{ left: PEER_SEQ + 100, right: PEER_SEQ + 200 }])
    const fill = connection.receive(data(0, 100), 20)
    expect(headers(fill)).toEqual([[ACK, 1, PEER_SEQ + 200]])
    expect(fill.segments[0]?.payload.byteLength).toBe(0)
    expect(Array.from(concat(fill.delivered))).toEqual(Array.from(concat([bytes(100, 0), bytes(100, 100)])))
    expect(connection.info().sack_sent).toBe(1)
  })

  it("acknowledges a duplicate at once", () => {
    const { connection } = dialed()
    connection.receive(data(0, 100), 10)
    connection.receive(data(100, 100), 11)
    expect(headers(connection.receive(data(0, 100), 12))).toEqual([[ACK, 1, PEER_SEQ + 200]])
  })

  it("answers a probe (a pure ACK one below rcv.nxt) at once, and nothing else that is a plain pure ACK", () => {
    const { connection } = dialed()
    expect(connection.receive(segment(ACK, PEER_SEQ, 1), 10).segments).toEqual([])
    expect(connection.receive(segment(ACK, PEER_ISN, 1), 11).segments).toEqual([segment(ACK, 1, PEER_SEQ)])
  })

  it("drops, unanswered, a segment acknowledging bytes never sent", () => {
    const { connection } = dialed()
    const step = connection.receive(segment(ACK, PEER_SEQ, 999, bytes(10)), 10)
    expect([step.segments, step.delivered]).toEqual([[], []])
  })

  it("takes the peer's window only from segments newer than the one that last set it (RFC 793 WL1/WL2)", () => {
    const { connection } = dialed()
    const late = segment(ACK, PEER_SEQ, 1, bytes(100), 9)
    connection.receive(late, 10)
    connection.receive(segment(ACK, PEER_SEQ + 100, 1, new Uint8Array(0), 3), 11)
    expect(connection.info().peer_recv_win).toBe(3 * 4096)
    connection.receive(late, 12) // a duplicate of the older segment
    expect(connection.info().peer_recv_win).toBe(3 * 4096)
  })
})

describe("the in-band SACK ambiguity", () => {
  const sackLooking = concat([ascii("SACK"), new Uint8Array([1]), new Uint8Array([0, 0, 0, 2, 0, 0, 0, 9]), ascii("tail")])

  it("sends application bytes that look like a SACK option with their first byte alone, and they arrive intact", () => {
    const wire = Wire.established({ noDelay: true })
    const step = wire.write("a", sackLooking, 1)
    expect(dataSegments(step).map((s) => s.payload.byteLength)).toEqual([1, sackLooking.byteLength - 1])
    wire.settle(2)
    expect(Array.from(wire.receivedBytes("b"))).toEqual(Array.from(sackLooking))
  })

  it("delivers, as data, a SACK-looking payload whose blocks could not come from an honest receiver", () => {
    const { connection } = dialed()
    const step = connection.receive(segment(ACK, PEER_SEQ, 1, encodeSack([{ left: 2, right: 9 }])), 10)
    expect(concat(step.delivered).byteLength).toBe(13)
    expect(connection.info().sack_recv).toBe(0)
  })

  it("reads a plausible SACK option on a pure ACK as SACK", () => {
    const { connection } = dialed({ noDelay: true })
    connection.write(bytes(3 * MSS), 1)
    const step = connection.receive(segment(ACK, PEER_SEQ, 1, encodeSack([{ left: 1 + MSS, right: 1 + 2 * MSS }])), 10)
    expect(step.delivered).toEqual([])
    expect(connection.info()).toMatchObject({ sack_recv: 1, dup_acks: 1 })
  })
})

describe("send buffer backpressure", () => {
  it(`accepts at most ${SEND_BUFFER_SEGMENTS} segments of unsent bytes, then says send_buffer_full, then writable`, () => {
    const { connection } = dialed()
    const cap = SEND_BUFFER_SEGMENTS * MSS
    const first = connection.write(bytes(1_000_000), 1)
    expect([first.accepted, first.outcome]).toEqual([cap, "send_buffer_full"])
    expect(connection.usage().unsentBytes).toBeLessThanOrEqual(cap)
    // The peer acknowledges everything sent, round after round, until the buffer is empty.
    const writableAt: Array<number> = []
    for (let t = 10; connection.usage().unsentBytes > 0; t += 10) {
      const step = connection.receive(segment(ACK, PEER_SEQ, 1 + connection.info().bytes_sent), t)
      if (hasEvent(step, "writable")) writableAt.push(connection.usage().unsentBytes)
      expect(connection.usage().unsentBytes).toBeLessThanOrEqual(cap)
    }
    expect(writableAt.length).toBe(1) // once per refusal
    expect(writableAt[0]).toBeLessThanOrEqual(cap / 2)
    expect(connection.write(bytes(10), 3_000).outcome).toBe("accepted")
  })

  it("refuses writes once the application has closed", () => {
    const { connection } = dialed()
    connection.close(1)
    expect(connection.write(bytes(10), 2)).toMatchObject({ accepted: 0, outcome: "not_writable" })
  })
})

describe("zero window", () => {
  it("probes a zero window at 500 ms doubling to 30 s, and sends as soon as the window reopens", () => {
    const { connection } = dialed({}, 0)
    const blocked = connection.write(bytes(100), 1)
    expect(blocked.segments).toEqual([])
    expect(blocked.nextDeadline).toBe(501)
    const probeTimes: Array<number> = []
    let deadline = blocked.nextDeadline
    for (let i = 0; i < 9; i++) {
      const step = connection.tick(deadline!)
      expect(step.segments).toEqual([segment(ACK, 0, PEER_SEQ, new Uint8Array(0))]) // snd.nxt − 1
      probeTimes.push(deadline!)
      // The peer answers: still zero (this keeps the connection from idling out).
      connection.receive(segment(ACK, PEER_SEQ, 1, new Uint8Array(0), 0), deadline!)
      deadline = connection.nextDeadline
    }
    const gaps = probeTimes.slice(1).map((t, i) => t - probeTimes[i]!)
    expect(gaps).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000])
    const reopened = connection.receive(segment(ACK, PEER_SEQ, 1, new Uint8Array(0), 1), deadline! - 1)
    expect(shape(dataSegments(reopened))).toEqual([[1, 100]])
  })

  it(`gives up after ${ZERO_WINDOW_PROBE_LIMIT} probes with RST and zero_window_timeout`, () => {
    const { connection } = dialed({}, 0)
    let step: StreamStep = connection.write(bytes(100), 1)
    let probes = 0
    while (failures(step).length === 0) {
      const at = step.nextDeadline!
      step = connection.tick(at)
      if (step.segments.some((s) => s.flags === ACK)) {
        probes++
        connection.receive(segment(ACK, PEER_SEQ, 1, new Uint8Array(0), 0), at)
      }
    }
    expect(probes).toBe(ZERO_WINDOW_PROBE_LIMIT)
    expect(failures(step)).toEqual(["zero_window_timeout"])
    expect(step.segments.map((s) => s.flags)).toEqual([RST])
  })

  it("advertises a zero window when the reader falls behind, and reopens it with an update when it reads", () => {
    const { connection } = dialed({ receiveBufferBytes: 8 * MSS })
    let last: StreamStep | undefined
    for (let i = 0; i < 8; i++) last = connection.receive(segment(ACK, PEER_SEQ + i * MSS, 1, bytes(MSS)), 10 + i)
    expect(last!.segments.map((s) => [s.ack, s.window])).toEqual([[PEER_SEQ + 8 * MSS, 0]])
    expect(connection.consume(MSS, 20).segments.map((s) => s.window)).toEqual([1]) // reopened: tell the sender
    expect(connection.consume(MSS, 21).segments).toEqual([]) // one more unit is not worth a segment
    expect(connection.consume(MSS, 22).segments.map((s) => s.window)).toEqual([3]) // a quarter of the buffer is
  })
})

describe("loss recovery", () => {
  /** A dialer with `count` full segments outstanding (no Nagle, no ACKs yet). */
  const sending = (count: number) => {
    const established = dialed({ noDelay: true })
    established.connection.write(bytes(count * MSS), 1)
    return established.connection
  }
  const dupAck = (connection: StreamConnection, sacked: number, at: number) =>
    connection.receive(segment(ACK, PEER_SEQ, 1, encodeSack([{ left: 1 + MSS, right: 1 + (1 + sacked) * MSS }])), at)

  it("fast-retransmits the first segment on the 3rd duplicate pure ACK", () => {
    const connection = sending(5)
    expect(dataSegments(dupAck(connection, 1, 10))).toEqual([])
    expect(dataSegments(dupAck(connection, 2, 11))).toEqual([])
    const third = dupAck(connection, 3, 12)
    expect(shape(dataSegments(third))[0]).toEqual([1, MSS])
    expect(connection.info()).toMatchObject({ fast_retx: 1, retransmits: 0, in_recovery: true, dup_acks: 3 })
  })

  it("never counts an ACK that carries data as a duplicate", () => {
    const connection = sending(5)
    for (let i = 0; i < 5; i++) connection.receive(segment(ACK, PEER_SEQ + i * 10, 1, bytes(10)), 10 + i)
    expect(connection.info()).toMatchObject({ dup_acks: 0, fast_retx: 0, in_recovery: false })
  })

  it(`resets and fails after ${RETRANSMIT_BUDGET} timer retransmissions of one segment, the RTO doubling each time`, () => {
    const connection = sending(1)
    const steps = tickUntil(connection, { state: "ESTABLISHED", segments: [], delivered: [], events: [], nextDeadline: connection.nextDeadline }, (s) => failures(s).length > 0)
    const retransmissions = steps.filter(([, s]) => dataSegments(s).length > 0).map(([t]) => t)
    expect(retransmissions.length).toBe(RETRANSMIT_BUDGET)
    const gaps = retransmissions.slice(1).map((t, i) => t - retransmissions[i]!)
    expect(gaps).toEqual([400, 800, 1_600, 3_200, 6_400, 10_000, 10_000]) // from the 200 ms floor (RTT 0)
    const [, last] = steps[steps.length - 1]!
    expect(failures(last)).toEqual(["retransmit_budget_exhausted"])
    expect(last.segments.map((s) => s.flags)).toEqual([RST])
    expect(connection.info().retransmits).toBe(RETRANSMIT_BUDGET)
  })

  it("does not count ACK-clocked retransmissions toward the budget", () => {
    const connection = sending(5)
    for (let i = 1; i <= 3; i++) dupAck(connection, i, 10 + i)
    expect(connection.info().fast_retx).toBeGreaterThanOrEqual(1)
    const steps = tickUntil(connection, { state: "ESTABLISHED", segments: [], delivered: [], events: [], nextDeadline: connection.nextDeadline }, (s) => failures(s).length > 0)
    expect(steps.filter(([, s]) => failures(s).length === 0 && s.segments.some((x) => x.seq === 1)).length).toBe(RETRANSMIT_BUDGET)
  })

  it("after a timeout: cwnd 1 MSS, ssthresh half the flight, go-back-N clocked by the ACKs", () => {
    const connection = sending(8)
    const timeout = connection.tick(connection.nextDeadline!)
    expect(shape(dataSegments(timeout))).toEqual([[1, MSS]])
    expect(connection.info()).toMatchObject({ cong_win: MSS, ssthresh: 4 * MSS, in_recovery: true, retransmits: 1 })
    const next = connection.receive(segment(ACK, PEER_SEQ, 1 + MSS), 500)
    expect(shape(dataSegments(next))).toEqual([[1 + MSS, MSS], [1 + 2 * MSS, MSS]]) // slow start: 2 segments
    connection.receive(segment(ACK, PEER_SEQ, 1 + 8 * MSS), 600)
    expect(connection.info()).toMatchObject({ in_recovery: false, unacked: 0 })
  })

  it("counts the traffic it carries", () => {
    const wire = Wire.established({ noDelay: true }, { noDelay: true })
    wire.write("a", bytes(10_000), 1)
    wire.write("b", bytes(300), 1)
    wire.settle(2)
    wire.tick("b", 2 + DELAYED_ACK_MS) // the last segment's ACK was delayed
    wire.settle(2 + DELAYED_ACK_MS)
    expect(wire.a.info()).toMatchObject({ bytes_sent: 10_000, segs_sent: 3, bytes_recv: 300, segs_recv: 1, unacked: 0 })
    expect(wire.connection("b").info()).toMatchObject({ bytes_sent: 300, bytes_recv: 10_000, segs_recv: 3 })
  })
})

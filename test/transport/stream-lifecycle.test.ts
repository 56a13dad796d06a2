import { describe, expect, it } from "@effect/vitest"
import { CongestionControl } from "../../src/transport/congestion.ts"
import { EMPTY_PAYLOAD, type Segment } from "../../src/transport/segment.ts"
import {
  IDLE_TIMEOUT_MS,
  KEEPALIVE_INTERVAL_MS,
  StreamConnection,
  type StreamStep,
  TIME_WAIT_MS
} from "../../src/transport/stream.ts"
import {
  ACK,
  bytes,
  dataSegments,
  dialed,
  failures,
  FIN,
  FULL_WINDOW,
  PEER_ISN,
  RST,
  segment,
  SYN,
  Wire
} from "./stream-fixtures.ts"

/** Ticks `connection` at each deadline it asks for, up to `until`; returns [time, step] pairs. */
const runTimers = (connection: StreamConnection, from: StreamStep, until: number) => {
  const steps: Array<readonly [number, StreamStep]> = []
  let deadline = from.nextDeadline
  while (deadline !== undefined && deadline <= until) {
    const step = connection.tick(deadline)
    steps.push([deadline, step])
    deadline = step.nextDeadline
  }
  return steps
}

const states = (step: StreamStep) => step.events.flatMap((e) => (e.type === "state_changed" ? [`${e.from}>${e.to}`] : []))

describe("dialing", () => {
  it("sends a SYN at the ISN and retries after 250 ms, doubling to 8 s; 7 unanswered SYNs are a dial_timeout", () => {
    const { connection, step } = StreamConnection.dial(0)
    expect(step.segments).toEqual([segment(SYN, 0, 0, EMPTY_PAYLOAD, FULL_WINDOW)])
    expect(step.state).toBe("SYN_SENT")
    const steps = runTimers(connection, step, 60_000)
    const synTimes = [0, ...steps.filter(([, s]) => s.segments.length > 0).map(([t]) => t)]
    expect(synTimes).toEqual([0, 250, 750, 1_750, 3_750, 7_750, 15_750])
    const [endedAt, last] = steps[steps.length - 1]!
    expect(endedAt).toBe(23_750)
    expect(failures(last)).toEqual(["dial_timeout"])
    expect(last.segments).toEqual([]) // nothing to reset: the peer never answered
    expect(connection.state).toBe("CLOSED")
    expect(last.nextDeadline).toBeUndefined()
  })

  it("reports connection_refused when the SYN is answered with RST", () => {
    const { connection } = StreamConnection.dial(0)
    const step = connection.receive(segment(RST, 0, 1), 40)
    expect(failures(step)).toEqual(["connection_refused"])
    expect(step.state).toBe("CLOSED")
  })

  it("ignores a SYN-ACK that does not acknowledge its SYN", () => {
    const { connection } = StreamConnection.dial(0, { isn: 100 })
    const step = connection.receive(segment(SYN | ACK, PEER_ISN, 1), 40)
    expect(step.state).toBe("SYN_SENT")
    expect(step.segments).toEqual([])
  })

  it("acknowledges the SYN-ACK at once, is ESTABLISHED and times the handshake", () => {
    const { connection } = StreamConnection.dial(0, { isn: 100 })
    const step = connection.receive(segment(SYN | ACK, PEER_ISN, 101, EMPTY_PAYLOAD, 3), 80)
    expect(step.segments).toEqual([segment(ACK, 101, PEER_ISN + 1)])
    expect(states(step)).toEqual(["SYN_SENT>ESTABLISHED"])
    expect(connection.info()).toMatchObject({ srtt_ms: 80, peer_recv_win: 3 * 4096 })
  })

  it("takes no RTT sample from a handshake whose SYN was retransmitted (Karn)", () => {
    const { connection, step } = StreamConnection.dial(0)
    connection.tick(step.nextDeadline!)
    connection.receive(segment(SYN | ACK, PEER_ISN, 1), 300)
    expect(connection.info().srtt_ms).toBe(0)
  })

  it("queues data written while dialing and sends it once established", () => {
    const { connection } = StreamConnection.dial(0, { noDelay: true })
    expect(connection.write(bytes(10), 1).segments).toEqual([])
    const step = connection.receive(segment(SYN | ACK, PEER_ISN, 1), 40)
    expect(dataSegments(step).map((s) => [s.seq, s.payload.byteLength])).toEqual([[1, 10]])
  })

  it("stops when closed while dialing", () => {
    const { connection } = StreamConnection.dial(0)
    const step = connection.close(10)
    expect(states(step)).toEqual(["SYN_SENT>CLOSED"])
    expect(step.segments).toEqual([])
    expect(failures(step)).toEqual([])
    expect(step.nextDeadline).toBeUndefined()
  })
})

describe("accepting", () => {
  const syn = segment(SYN, 300, 0, EMPTY_PAYLOAD, 8)

  it("answers a SYN with a SYN-ACK and is ESTABLISHED at once", () => {
    const { connection, step } = StreamConnection.accept(syn, 0, { isn: 777 })
    expect(step.segments).toEqual([segment(SYN | ACK, 777, 301)])
    expect(states(step)).toEqual(["CLOSED>ESTABLISHED"])
    expect(connection.info().peer_recv_win).toBe(8 * 4096)
  })

  it("refuses to accept anything but a SYN", () => {
    expect(() => StreamConnection.accept(segment(SYN | ACK, 1, 1), 0)).toThrow(RangeError)
  })

  it("sends no data before its SYN-ACK is acknowledged", () => {
    const { connection } = StreamConnection.accept(syn, 0, { noDelay: true })
    expect(connection.write(bytes(100), 1).segments).toEqual([])
    const step = connection.receive(segment(ACK, 301, 1), 50)
    expect(dataSegments(step).map((s) => s.seq)).toEqual([1])
  })

  it("answers a duplicate SYN with the original SYN-ACK sequence number, even after data has flowed", () => {
    const wire = Wire.established({ noDelay: true }, { isn: 777, noDelay: true })
    const originalSyn: Segment = segment(SYN, 0, 0)
    wire.write("b", bytes(5000), 1)
    wire.write("a", bytes(3000), 1)
    wire.settle(2)
    const step = wire.connection("b").receive(originalSyn, 3)
    expect(step.segments.map((s) => [s.flags, s.seq])).toEqual([[SYN | ACK, 777]])
    expect(step.segments[0]?.ack).toBe(3001) // the current cumulative ACK
  })

  it("retransmits an unacknowledged SYN-ACK on its timer without touching its congestion state", () => {
    const { connection, step } = StreamConnection.accept(syn, 0, { isn: 777 })
    expect(step.nextDeadline).toBe(1_000)
    const retry = connection.tick(1_000)
    expect(retry.segments.map((s) => [s.flags, s.seq, s.ack])).toEqual([[SYN | ACK, 777, 301]])
    const fresh = new CongestionControl(4096)
    expect(connection.info()).toMatchObject({ cong_win: fresh.cwnd, ssthresh: fresh.ssthresh, retransmits: 1 })
  })

  it("the dialer re-acknowledges a retransmitted SYN-ACK", () => {
    const { connection } = dialed()
    const step = connection.receive(segment(SYN | ACK, PEER_ISN, 1), 500)
    expect(step.segments).toEqual([segment(ACK, 1, PEER_ISN + 1)])
  })
})

describe("closing", () => {
  it("active close ends in TIME_WAIT for 10 s, passive close in CLOSED once its FIN is acknowledged", () => {
    const wire = Wire.established()
    const closing = wire.close("a", 10)
    expect(closing.segments.map((s) => [s.flags, s.seq])).toEqual([[FIN | ACK, 1]])
    wire.settle(20)
    expect([wire.a.state, wire.connection("b").state]).toEqual(["FIN_WAIT", "CLOSE_WAIT"])
    expect(wire.events.b.some((e) => e.type === "peer_closed")).toBe(true)
    wire.close("b", 30)
    wire.settle(40)
    expect([wire.a.state, wire.connection("b").state]).toEqual(["TIME_WAIT", "CLOSED"])
    expect(wire.a.nextDeadline).toBe(40 + TIME_WAIT_MS)
    expect(wire.tick("a", 40 + TIME_WAIT_MS - 1).state).toBe("TIME_WAIT")
    const end = wire.tick("a", 40 + TIME_WAIT_MS)
    expect(states(end)).toEqual(["TIME_WAIT>CLOSED"])
    expect(failures(end)).toEqual([])
    expect([...wire.events.a, ...wire.events.b].filter((e) => e.type === "failed")).toEqual([])
  })

  it("simultaneous close: both sides pass through CLOSING into TIME_WAIT", () => {
    const wire = Wire.established()
    wire.close("a", 10)
    wire.close("b", 10)
    wire.settle(20)
    const path = (side: "a" | "b") =>
      wire.events[side].flatMap((e) => (e.type === "state_changed" ? [e.to] : []))
    expect(path("a")).toEqual(["SYN_SENT", "ESTABLISHED", "FIN_WAIT", "CLOSING", "TIME_WAIT"])
    expect(path("b")).toEqual(["ESTABLISHED", "FIN_WAIT", "CLOSING", "TIME_WAIT"])
  })

  it("sends the FIN after every queued byte, whatever Nagle and the window held back", () => {
    const { connection, firstSeq } = dialed({}, 1) // the peer's window is one unit
    const written = connection.write(bytes(4096 + 10), 1)
    expect(dataSegments(written).map((s) => s.payload.byteLength)).toEqual([4096]) // all the window allows
    expect(connection.close(2).segments).toEqual([]) // 10 bytes still queued: no FIN yet
    const next = connection.receive(segment(ACK, PEER_ISN + 1, firstSeq + 4096), 50)
    expect(next.segments.map((s) => [s.flags, s.seq, s.payload.byteLength])).toEqual([
      [ACK, firstSeq + 4096, 10],
      [FIN | ACK, firstSeq + 4106, 0]
    ])
  })

  it("holds an early FIN until the data before it arrives, then ends the stream with every byte", () => {
    const wire = Wire.established({ noDelay: true })
    wire.write("a", bytes(3 * 4096), 1)
    wire.close("a", 1)
    const held = wire.inFlight.a.splice(1, 1) // the second segment is delayed past the FIN
    wire.deliverOne("a", 2)
    wire.deliverOne("a", 2)
    wire.deliverOne("a", 2) // the FIN
    expect(wire.connection("b").state).toBe("ESTABLISHED")
    expect(wire.events.b.some((e) => e.type === "peer_closed")).toBe(false)
    expect(wire.inFlight.b.at(-1)?.ack).toBe(1 + 4096) // asks for the missing segment
    wire.inFlight.a.push(...held)
    wire.settle(3)
    expect(Array.from(wire.receivedBytes("b"))).toEqual(Array.from(bytes(3 * 4096)))
    expect(wire.connection("b").state).toBe("CLOSE_WAIT")
  })

  it("half-close: the closer keeps receiving what the other side still sends", () => {
    const wire = Wire.established({}, { noDelay: true })
    wire.close("a", 1)
    wire.settle(2)
    wire.write("b", bytes(9000, 4), 3)
    wire.settle(4)
    wire.close("b", 5)
    wire.settle(6)
    expect(Array.from(wire.receivedBytes("a"))).toEqual(Array.from(bytes(9000, 4)))
    expect(wire.a.state).toBe("TIME_WAIT")
  })

  it("TIME_WAIT re-acknowledges a retransmitted FIN without extending itself", () => {
    const wire = Wire.established()
    wire.close("a", 0)
    wire.settle(0)
    wire.close("b", 0)
    const finFromB = wire.inFlight.b[0]!
    wire.settle(0)
    expect(wire.a.state).toBe("TIME_WAIT")
    const again = wire.a.receive(finFromB, 5_000)
    expect(again.segments.map((s) => [s.flags, s.ack])).toEqual([[ACK, finFromB.seq + 1]])
    expect(again.nextDeadline).toBe(TIME_WAIT_MS)
  })
})

describe("resets", () => {
  it("an RST on an open connection is reset_by_peer, and is not answered", () => {
    const { connection } = dialed()
    const step = connection.receive(segment(RST, PEER_ISN + 1, 0), 10)
    expect(failures(step)).toEqual(["reset_by_peer"])
    expect(step.segments).toEqual([])
    expect(connection.receive(segment(ACK, PEER_ISN + 1, 1, bytes(10)), 11).segments).toEqual([])
  })

  it("an RST in TIME_WAIT closes quietly", () => {
    const wire = Wire.established()
    wire.close("a", 0)
    wire.settle(0)
    wire.close("b", 0)
    wire.settle(0)
    const step = wire.a.receive(segment(RST, 0, 0), 100)
    expect([step.state, failures(step)]).toEqual(["CLOSED", []])
  })

  it("an RST in LAST_ACK is a clean close once everything was acknowledged, reset_by_peer otherwise", () => {
    const lastAck = (unacknowledgedData: boolean) => {
      const wire = Wire.established({}, { noDelay: true })
      wire.close("a", 0)
      wire.settle(0)
      if (unacknowledgedData) wire.write("b", bytes(100), 1)
      wire.close("b", 1)
      expect(wire.connection("b").state).toBe("LAST_ACK")
      return wire.connection("b").receive(segment(RST, 2, 0), 2)
    }
    expect(failures(lastAck(false))).toEqual([])
    expect(lastAck(false).state).toBe("CLOSED")
    expect(failures(lastAck(true))).toEqual(["reset_by_peer"])
  })

  it("abort sends an RST and closes without reporting an error", () => {
    const { connection } = dialed()
    const step = connection.abort(10)
    expect(step.segments.map((s) => s.flags)).toEqual([RST])
    expect([step.state, failures(step)]).toEqual(["CLOSED", []])
  })
})

describe("liveness", () => {
  it(`sends RST and fails with idle_timeout after ${IDLE_TIMEOUT_MS / 1000} s without hearing from the peer`, () => {
    const { connection, step } = dialed()
    const steps = runTimers(connection, step, 10 * 60_000)
    const probes = steps.filter(([, s]) => s.segments.some((x) => x.flags === ACK)).map(([t]) => t)
    expect(probes).toEqual([30_000, 60_000, 90_000]) // keepalives, unanswered
    const [at, last] = steps[steps.length - 1]!
    expect(at).toBe(IDLE_TIMEOUT_MS)
    expect(failures(last)).toEqual(["idle_timeout"])
    expect(last.segments.map((s) => s.flags)).toEqual([RST])
  })

  it("keepalive probes of an idle connection are answered, and keep it open", () => {
    const wire = Wire.established()
    let now = 0
    for (let round = 0; round < 10; round++) {
      now = wire.a.nextDeadline!
      const step = wire.tick("a", now)
      expect(step.segments.map((s) => [s.flags, s.seq])).toEqual([[ACK, 0]]) // one below snd.nxt
      wire.settle(now)
    }
    expect(now).toBeGreaterThan(5 * KEEPALIVE_INTERVAL_MS)
    expect([wire.a.state, wire.connection("b").state]).toEqual(["ESTABLISHED", "ESTABLISHED"])
    expect([...wire.events.a, ...wire.events.b].some((e) => e.type === "failed")).toBe(false)
  })
})

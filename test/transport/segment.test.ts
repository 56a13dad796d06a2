import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import { makeAddr } from "../../src/protocol/address.ts"
import { decodePacket, encodePacket, PacketFlag, Protocol } from "../../src/protocol/packet.ts"
import { type Endpoints, fromPacket, resetFor, toPacket } from "../../src/transport/segment.ts"
import { ascii, segment } from "./stream-fixtures.ts"

const { SYN, ACK, FIN, RST } = PacketFlag
const endpoints: Endpoints = { local: makeAddr(1, 7), localPort: 49200, remote: makeAddr(1, 9), remotePort: 1001 }

describe("segments and packets", () => {
  it("map 1:1 onto Stream packets of the connection's 4-tuple", () => {
    const original = segment(ACK | FIN, 0xfffffff0, 42, ascii("bye"), 17)
    const packet = toPacket(original, endpoints)
    expect(packet).toMatchObject({ protocol: Protocol.Stream, src: endpoints.local, dst: endpoints.remote, srcPort: 49200, dstPort: 1001 })
    const decoded = Result.getOrThrow(decodePacket(encodePacket(packet)))
    const back = fromPacket(decoded)
    expect({ ...back, payload: Array.from(back.payload) }).toEqual({ ...original, payload: Array.from(original.payload) })
  })
})

describe("resetFor (a segment that reached no connection)", () => {
  it("answers a SYN with an RST acknowledging it", () => {
    expect(resetFor(segment(SYN, 100, 0))).toMatchObject({ flags: RST, seq: 0, ack: 101 })
  })

  it("answers an ACK with an RST at the sequence it acknowledged", () => {
    expect(resetFor(segment(ACK, 7, 5000, ascii("data")))).toMatchObject({ flags: RST, seq: 5000, ack: 11 })
  })

  it("counts a FIN's sequence number", () => {
    expect(resetFor(segment(ACK | FIN, 0xffffffff, 3))).toMatchObject({ seq: 3, ack: 0 })
  })

  it("never answers an RST", () => {
    expect(resetFor(segment(RST, 1, 1))).toBeUndefined()
  })
})

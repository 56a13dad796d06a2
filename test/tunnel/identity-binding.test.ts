/**
 * Identity binding (reference §4.3 step 6): the inner source must be the authenticated sender, with the
 * legacy Src.Node = 0 exception limited to the exact NAT keepalive shape.
 */
import { describe, expect, it } from "vitest"
import { PacketFlag, Protocol, type Packet } from "../../src/protocol/packet.ts"
import { bindInnerSource, type BindingVerdict, isNatKeepalive } from "../../src/tunnel/identity-binding.ts"
import { dataPacket, keepalive, NODE, OTHER_NODE } from "./fixtures.ts"

const rows: ReadonlyArray<{ readonly name: string; readonly packet: Packet; readonly verdict: BindingVerdict }> = [
  { name: "data from the authenticated sender", packet: dataPacket(NODE), verdict: "bound" },
  { name: "a keepalive from the authenticated sender", packet: keepalive(NODE), verdict: "bound" },
  { name: "data claiming another node", packet: dataPacket(OTHER_NODE), verdict: "spoofed" },
  { name: "a keepalive claiming another node", packet: keepalive(OTHER_NODE), verdict: "spoofed" },
  { name: "a pre-v1.12.1 keepalive with Src.Node 0", packet: keepalive(0), verdict: "legacy_keepalive" },
  { name: "data with Src.Node 0", packet: dataPacket(0), verdict: "spoofed" },
  {
    name: "a ping with a payload and Src.Node 0 (would make us answer for node 0)",
    packet: { ...keepalive(0), payload: new TextEncoder().encode("pathprobe.v1") },
    verdict: "spoofed"
  },
  { name: "an empty pong (ACK) with Src.Node 0", packet: { ...keepalive(0), flags: PacketFlag.ACK }, verdict: "spoofed" },
  {
    name: "an empty datagram to port 0 with Src.Node 0",
    packet: { ...keepalive(0), protocol: Protocol.Datagram },
    verdict: "spoofed"
  }
]

describe("bindInnerSource", () => {
  for (const { name, packet, verdict } of rows) {
    it(`${name} → ${verdict}`, () => {
      expect(bindInnerSource(packet, NODE)).toBe(verdict)
    })
  }

  it("isNatKeepalive recognises only an empty Control packet to port 0 without ACK", () => {
    expect(isNatKeepalive(keepalive())).toBe(true)
    expect(isNatKeepalive({ ...keepalive(), dstPort: 1 })).toBe(false)
    expect(isNatKeepalive({ ...keepalive(), payload: new Uint8Array(1) })).toBe(false)
    expect(isNatKeepalive({ ...keepalive(), flags: PacketFlag.ACK })).toBe(false)
    expect(isNatKeepalive(dataPacket())).toBe(false)
  })
})

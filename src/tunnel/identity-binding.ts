/**
 * Identity binding of decrypted packets (reference §4.3 step 6, §14.12): the inner packet's `Src.Node` must
 * equal the node ID the PILS frame authenticated (its AAD). Without the check, any peer holding a session
 * could inject packets that the transport, trust handshake and services would attribute to a third node.
 *
 * One exception is kept, on purpose and narrowly: pre-v1.12.1 peers sent their NAT keepalive with
 * `Src.Node = 0`. It is accepted only when the packet has exactly the keepalive shape (an empty Control
 * packet to port 0 without ACK), because a keepalive is never delivered: it only refreshes the liveness of
 * the sender the AEAD already authenticated, so the zero source cannot be used to speak for anyone else.
 * Refusing it would make those peers' sessions look dead and drive needless re-handshakes.
 */
import { PacketFlag, Protocol, type Packet, WellKnownPort } from "../protocol/packet.ts"

/** `bound`: deliver normally; `legacy_keepalive`: liveness only (see the module doc); `spoofed`: drop. */
export type BindingVerdict = "bound" | "legacy_keepalive" | "spoofed"

/**
 * A NAT keepalive (reference §3.4): an empty Control packet to port 0. Receivers run the liveness side
 * effects and drop it before application delivery. A pong to port 0 carries ACK and is not a keepalive.
 */
export const isNatKeepalive = (packet: Packet): boolean =>
  packet.protocol === Protocol.Control &&
  packet.dstPort === WellKnownPort.Ping &&
  packet.payload.byteLength === 0 &&
  (packet.flags & PacketFlag.ACK) === 0

/** Checks a decrypted packet against the node ID its PILS frame was authenticated for. */
export const bindInnerSource = (packet: Packet, authenticatedSender: number): BindingVerdict => {
  if (packet.src.node === authenticatedSender) return "bound"
  if (packet.src.node === 0 && isNatKeepalive(packet)) return "legacy_keepalive"
  return "spoofed"
}

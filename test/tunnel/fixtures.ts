/**
 * Builders shared by the tunnel-core tests: peers, sessions, inputs and inner packets.
 */
import { type Packet, Protocol, WellKnownPort } from "../../src/protocol/packet.ts"
import {
  type DecisionContext,
  type DecryptEpoch,
  EMPTY_PEER,
  type KeyExchangeInput,
  type PeerState,
  type Session,
  type SessionId,
  type Via
} from "../../src/tunnel/key-exchange.ts"

export const NODE = 42
export const OTHER_NODE = 99
export const EP = "198.51.100.7:4000"
export const EP2 = "203.0.113.9:5000"
export const KEY_A = new Uint8Array(32).fill(0xa1)
export const KEY_B = new Uint8Array(32).fill(0xb2)

export const direct = (endpoint = EP): Via => ({ _tag: "Direct", endpoint })
export const RELAY: Via = { _tag: "Relay" }

export const context = (nowMs: number, overrides: Partial<DecisionContext> = {}): DecisionContext => ({
  nodeId: NODE,
  nowMs,
  nextSessionId: 7,
  sessionRoom: true,
  peerRoom: true,
  pendingPeerRoom: true,
  mayRetransmit: true,
  ...overrides
})

/** An authenticated direct session on KEY_A with id 3, installed and last decrypted at 0. */
export const session = (overrides: Partial<Session> = {}): Session => ({
  id: 3,
  peerX25519: KEY_A,
  authenticated: true,
  viaRelay: false,
  installedAtMs: 0,
  lastDecryptMs: 0,
  newestEpochAtMs: 0,
  lastRecoveryReplyMs: undefined,
  decryptFailures: 0,
  windowRejections: { replay: 0, outside_window: 0 },
  ...overrides
})

/** A peer whose endpoint is known (EP). */
export const peer = (overrides: Partial<PeerState> = {}): PeerState => ({ ...EMPTY_PEER, endpoint: EP, ...overrides })

export const pila = (x25519 = KEY_A, via = direct()): KeyExchangeInput => ({ _tag: "AuthKeyExchange", x25519, via })

export const pilk = (registryKnowsNode: boolean, x25519 = KEY_A, via = direct()): KeyExchangeInput => ({
  _tag: "KeyExchange",
  x25519,
  via,
  registryKnowsNode
})

export const dataPacket = (srcNode = NODE): Packet => ({
  flags: 0,
  protocol: Protocol.Stream,
  src: { network: 0, node: srcNode },
  dst: { network: 0, node: 1000 },
  srcPort: 49152,
  dstPort: WellKnownPort.DataExchange,
  seq: 1,
  ack: 0,
  window: 32,
  payload: new Uint8Array([1, 2, 3])
})

/** A NAT keepalive: empty Control packet to port 0. */
export const keepalive = (srcNode = NODE): Packet => ({
  ...dataPacket(srcNode),
  protocol: Protocol.Control,
  srcPort: 0,
  dstPort: WellKnownPort.Ping,
  payload: new Uint8Array(0)
})

export const decrypted = (
  packet: Packet = dataPacket(),
  via = direct(),
  sessionId: SessionId = 3,
  epoch: DecryptEpoch = "newest"
): KeyExchangeInput => ({ _tag: "Decrypted", session: sessionId, via, epoch, packet })

export const outbound = (tag: number): KeyExchangeInput => ({ _tag: "OutboundPacket", packet: new Uint8Array([tag]) })

export const packets = (count: number, first = 0): Array<Uint8Array> =>
  Array.from({ length: count }, (_, i) => new Uint8Array([first + i]))

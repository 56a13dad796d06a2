/**
 * A stream segment: the transport-relevant fields of one Stream packet (reference §3.1). A connection knows
 * its own 4-tuple, so the shell maps a segment to a `Packet` 1:1 by adding addresses, ports and
 * `Protocol.Stream` (`toPacket` / `fromPacket`), and everything in `src/transport` speaks segments only.
 *
 * Sequence numbers are u32 byte offsets compared with the RFC 1982 helpers of `protocol/packet.ts`. SYN and
 * FIN each occupy one sequence number; a segment's payload occupies its length, unless the segment is a pure
 * ACK whose payload is a SACK option (see `sack.ts` for that rule).
 */
import type { Addr } from "../protocol/address.ts"
import { type Packet, PacketFlag, Protocol, seqAdd } from "../protocol/packet.ts"

export interface Segment {
  /** Bitwise OR of `PacketFlag` values. */
  readonly flags: number
  readonly seq: number
  readonly ack: number
  /** Free receive buffer of the sender, in units of `WINDOW_UNIT_BYTES`; 0 is a real zero window. */
  readonly window: number
  readonly payload: Uint8Array
}

/** Largest payload our sender puts in one segment by default (reference §8.2). */
export const DEFAULT_MSS = 4096
/**
 * What one unit of the window field is worth. The Go daemon reads it as `window × MaxSegmentSize` with a
 * fixed 4096, so this is part of the wire contract and does not follow a locally configured MSS.
 */
export const WINDOW_UNIT_BYTES = 4096
export const MAX_WINDOW_FIELD = 0xffff

export const EMPTY_PAYLOAD: Uint8Array = new Uint8Array(0)

export const hasFlag = (segment: Segment, flag: number): boolean => (segment.flags & flag) !== 0

/** The 4-tuple a connection keeps so that its segments can become packets. */
export interface Endpoints {
  readonly local: Addr
  readonly localPort: number
  readonly remote: Addr
  readonly remotePort: number
}

export const toPacket = (segment: Segment, endpoints: Endpoints): Packet => ({
  flags: segment.flags,
  protocol: Protocol.Stream,
  src: endpoints.local,
  dst: endpoints.remote,
  srcPort: endpoints.localPort,
  dstPort: endpoints.remotePort,
  seq: segment.seq,
  ack: segment.ack,
  window: segment.window,
  payload: segment.payload
})

export const fromPacket = (packet: Packet): Segment => ({
  flags: packet.flags,
  seq: packet.seq,
  ack: packet.ack,
  window: packet.window,
  payload: packet.payload
})

/**
 * The reply to a segment that reached no connection (closed port, connection already gone): an RST that
 * the sender will accept, never an answer to an RST (two stacks must not ping-pong resets). The shell
 * decides whether to send it at all: a private node drops silently (reference §5).
 */
export const resetFor = (segment: Segment): Segment | undefined => {
  if (hasFlag(segment, PacketFlag.RST)) return undefined
  const occupied = segment.payload.byteLength +
    (hasFlag(segment, PacketFlag.SYN) ? 1 : 0) +
    (hasFlag(segment, PacketFlag.FIN) ? 1 : 0)
  return {
    flags: PacketFlag.RST,
    seq: hasFlag(segment, PacketFlag.ACK) ? segment.ack : 0,
    ack: seqAdd(segment.seq, occupied),
    window: 0,
    payload: EMPTY_PAYLOAD
  }
}

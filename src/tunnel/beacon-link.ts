/**
 * The tunnel's side of the beacon (reference §7): what it sends to the beacon from the tunnel socket —
 * Discover with our node ID (so the beacon knows the endpoint our NAT gives that socket), PunchRequest, our
 * frames wrapped as Relay — and which beacon messages it accepts: only those whose source is the configured
 * beacon address. Synchronous and allocation-light like the rest of the datagram path; the tunnel decides
 * when to call what.
 *
 * A RelayDeliver's claimed sender is never trusted (reference Issue #199): the tunnel gets the inner frame
 * and the frame's own authentication decides who sent it.
 */
import { Result } from "effect"
import * as NetAddress from "effect/net/NetAddress"
import { inetAddress, type UdpEndpoint } from "../net/udp-endpoint.ts"
import { type BeaconMessage, decodeBeaconMessage, encodeBeaconMessage, type UdpEndpoint as WireEndpoint } from "../protocol/beacon.ts"
import { encodePunchFrame } from "../protocol/tunnel-frame.ts"

/** PILP datagrams fired at a PunchCommand's endpoint (the reference's 3). */
export const PUNCHES_PER_COMMAND = 3

export interface BeaconCounters {
  discovers_sent: number
  punch_requests_sent: number
  punches_sent: number
  relay_frames_sent: number
  relay_frames_received: number
  /** Beacon messages from a source that is not our beacon, malformed ones, or types a node never gets. */
  beacon_messages_refused: number
}

export const makeBeaconCounters = (): BeaconCounters => ({
  discovers_sent: 0,
  punch_requests_sent: 0,
  punches_sent: 0,
  relay_frames_sent: 0,
  relay_frames_received: 0,
  beacon_messages_refused: 0
})

/** What a beacon datagram asks of the tunnel once accepted. */
export type BeaconInput =
  /** `sender` is the beacon's claim: a name for rate limits and reassembly, never an identity. */
  | { readonly _tag: "RelayDeliver"; readonly sender: number; readonly frame: Uint8Array }
  | { readonly _tag: "DiscoverReply"; readonly endpoint: string }
  | { readonly _tag: "Notify"; readonly kind: number }
  | { readonly _tag: "Handled" }

export interface BeaconLink {
  readonly address: NetAddress.InetAddress
  /** `host:port` of the beacon, as the Info JSON's `beacon_addr`. */
  readonly text: string
  readonly counters: BeaconCounters
  readonly discover: (ownNode: number) => void
  readonly punchRequest: (ownNode: number, target: number) => void
  /** Wraps `frame` as Relay from `ownNode` to `dest`; false when the send queue refused it. */
  readonly relay: (ownNode: number, dest: number, frame: Uint8Array) => boolean
  /** Takes a datagram whose first byte says "beacon message"; `undefined` when it was refused (counted). */
  readonly accept: (bytes: Uint8Array, from: NetAddress.InetAddress) => BeaconInput | undefined
}


export const makeBeaconLink = (udp: UdpEndpoint, address: NetAddress.InetAddress): BeaconLink => {
  const counters = makeBeaconCounters()
  const text = NetAddress.formatInet(address)
  const send = (message: BeaconMessage): boolean => udp.send(encodeBeaconMessage(message), address)

  const punch = (endpoint: WireEndpoint): void => {
    const to = inetAddress(endpoint.ip, endpoint.port)
    if (to === undefined) return
    for (let i = 0; i < PUNCHES_PER_COMMAND; i++) if (udp.send(encodePunchFrame(), to)) counters.punches_sent++
  }

  return {
    address,
    text,
    counters,
    discover: (ownNode) => {
      if (send({ _tag: "Discover", node: ownNode })) counters.discovers_sent++
    },
    punchRequest: (ownNode, target) => {
      if (send({ _tag: "PunchRequest", requester: ownNode, target })) counters.punch_requests_sent++
    },
    relay: (ownNode, dest, frame) => {
      const sent = send({ _tag: "Relay", sender: ownNode, dest, frame })
      if (sent) counters.relay_frames_sent++
      return sent
    },
    accept: (bytes, from) => {
      if (NetAddress.formatInet(from) !== text) {
        counters.beacon_messages_refused++
        return undefined
      }
      const decoded = decodeBeaconMessage(bytes)
      if (Result.isFailure(decoded)) {
        counters.beacon_messages_refused++
        return undefined
      }
      const message = decoded.success
      switch (message._tag) {
        case "RelayDeliver":
          counters.relay_frames_received++
          return { _tag: "RelayDeliver", sender: message.sender, frame: message.frame }
        case "PunchCommand":
          punch(message.endpoint)
          return { _tag: "Handled" }
        case "DiscoverReply": {
          const endpoint = inetAddress(message.endpoint.ip, message.endpoint.port)
          if (endpoint === undefined) return undefined
          return { _tag: "DiscoverReply", endpoint: NetAddress.formatInet(endpoint) }
        }
        case "Notify":
          return { _tag: "Notify", kind: message.kind }
        case "Discover":
        case "PunchRequest":
        case "Relay":
        case "Sync":
          counters.beacon_messages_refused++
          return undefined
      }
    }
  }
}

/**
 * Virtual addresses (reference §2): 16-bit network ID + 32-bit node ID, 6 bytes big-endian on the wire.
 *
 * Text form `N:NNNN.HHHH.LLLL`: `N` is the network ID in decimal, then three 4-digit hex groups. The first
 * group repeats the network ID in hex and a mismatch is rejected (the reference's SPEC prose shows an
 * example that breaks this rule; the Go parser rejects it, and so do we). The other two are the node ID's
 * high and low 16 bits. A socket address is an address plus `:port` in decimal.
 */
import { Result } from "effect"
import { type DecodeError, decodeFail } from "./errors.ts"

export interface Addr {
  readonly network: number
  readonly node: number
}

export interface SocketAddr {
  readonly addr: Addr
  readonly port: number
}

export const ADDR_BYTES = 6
export const MAX_NETWORK = 0xffff
export const MAX_NODE = 0xffffffff
export const MAX_PORT = 0xffff

/** Network 0 is the backbone; the registry hands out every node's address on it. */
export const BACKBONE_NETWORK = 0
export const ZERO_ADDR: Addr = { network: 0, node: 0 }
export const REGISTRY_NODE = 1
export const BEACON_NODE = 2
export const NAMESERVER_NODE = 3
export const BROADCAST_NODE = 0xffffffff

export const makeAddr = (network: number, node: number): Addr => ({ network, node })
export const broadcastAddr = (network: number): Addr => ({ network, node: BROADCAST_NODE })
export const isZeroAddr = (a: Addr): boolean => a.network === 0 && a.node === 0
export const isBroadcast = (a: Addr): boolean => a.node === BROADCAST_NODE
export const addrEquals = (a: Addr, b: Addr): boolean => a.network === b.network && a.node === b.node

export const isValidAddr = (a: Addr): boolean =>
  Number.isInteger(a.network) && a.network >= 0 && a.network <= MAX_NETWORK &&
  Number.isInteger(a.node) && a.node >= 0 && a.node <= MAX_NODE

export const isValidPort = (port: number): boolean => Number.isInteger(port) && port >= 0 && port <= MAX_PORT

/** Writes the 6-byte form at `offset` of `view`. The caller guarantees room and a valid address. */
export const writeAddr = (view: DataView, offset: number, a: Addr): void => {
  view.setUint16(offset, a.network)
  view.setUint32(offset + 2, a.node)
}

export const readAddr = (view: DataView, offset: number): Addr => ({
  network: view.getUint16(offset),
  node: view.getUint32(offset + 2)
})

export const encodeAddr = (a: Addr): Uint8Array => {
  const out = new Uint8Array(ADDR_BYTES)
  writeAddr(new DataView(out.buffer), 0, a)
  return out
}

export const decodeAddr = (bytes: Uint8Array): Result.Result<Addr, DecodeError> =>
  bytes.byteLength !== ADDR_BYTES
    ? decodeFail("address", bytes.byteLength < ADDR_BYTES ? "short" : "oversize", `expected 6 bytes, got ${bytes.byteLength}`)
    : Result.succeed(readAddr(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 0))

const hex4 = (n: number): string => n.toString(16).toUpperCase().padStart(4, "0")

export const formatAddr = (a: Addr): string =>
  `${a.network}:${hex4(a.network)}.${hex4(a.node >>> 16)}.${hex4(a.node & 0xffff)}`

export const formatSocketAddr = (s: SocketAddr): string => `${formatAddr(s.addr)}:${s.port}`

const ADDR_TEXT = /^(\d{1,5}):([0-9A-Fa-f]{4})\.([0-9A-Fa-f]{4})\.([0-9A-Fa-f]{4})$/

export const parseAddr = (text: string): Result.Result<Addr, DecodeError> => {
  const m = ADDR_TEXT.exec(text)
  if (m === null) return decodeFail("address", "invalid", `"${text}" is not of the form N:NNNN.HHHH.LLLL`)
  const [, dec, netHex, hi, lo] = m as unknown as [string, string, string, string, string]
  const network = Number(dec)
  if (network > MAX_NETWORK) return decodeFail("address", "invalid", `network ${network} exceeds 65535`)
  if (parseInt(netHex, 16) !== network) {
    return decodeFail("address", "inconsistent", `network group ${netHex} does not repeat network ${network}`)
  }
  return Result.succeed({ network, node: parseInt(hi, 16) * 0x10000 + parseInt(lo, 16) })
}

export const parseSocketAddr = (text: string): Result.Result<SocketAddr, DecodeError> => {
  const i = text.lastIndexOf(":")
  if (i < 0) return decodeFail("socket address", "invalid", `"${text}" has no :port`)
  const portText = text.slice(i + 1)
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN
  if (!isValidPort(port)) return decodeFail("socket address", "invalid", `port "${portText}" is not 0-65535`)
  return Result.map(parseAddr(text.slice(0, i)), (addr) => ({ addr, port }))
}

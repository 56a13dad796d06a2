/**
 * IPC messages between the daemon and its local drivers (pilotctl, SDKs), reference §9.
 *
 * Frame: `[u32 BE length][cmd u8][payload]`. As in Go's `ipcutil`, the length counts the command byte plus the
 * payload, so the length-prefixed splitter yields `[cmd][payload]` bodies and the 1 MiB limit covers both.
 * There are no request IDs: replies are matched by command code, pushes (Accept, Recv, RecvFrom, CloseOK after
 * a remote FIN) are routed by command.
 *
 * Every payload layout is described once, as an ordered list of typed fields, and shared by every command that
 * uses it (a request and its reply, all "[node 4]" payloads, all JSON replies). `encodeIpcFrame` and
 * `decodeIpcBody` are generic walks over that table, so adding a command is one table row, and the encoder and
 * decoder cannot drift apart.
 *
 * Decoding is strict: a fixed layout must be exactly as long as its fields (missing bytes are `short`, extra
 * bytes `inconsistent`), flags must be 0 or 1, text must be valid UTF-8, JSON must parse. The one exception is
 * Cancel, whose payload the reference says is ignored. JSON payloads decode to `unknown`: the daemon validates
 * them with its own schemas.
 *
 * Encoding returns a `Result` rather than a bare buffer: a field outside its wire domain (a port above 65535, a
 * lone surrogate) or a body over 1 MiB must be refused here, not written and answered by the peer closing the
 * connection.
 */
import { Result } from "effect"
import { ADDR_BYTES, type Addr, isValidAddr, MAX_NETWORK, MAX_NODE, readAddr, writeAddr } from "./address.ts"
import { DecodeError, decodeFail } from "./errors.ts"
import { allocateFrame, decodeJsonBody, decodeUtf8, encodeJson, encodeUtf8, LENGTH_PREFIX_BYTES } from "./length-prefixed.ts"

/** Command codes of reference §9 (and Go's `daemon/ipc.go`). */
export const IpcCmd = {
  Bind: 0x01,
  BindOK: 0x02,
  Dial: 0x03,
  DialOK: 0x04,
  Accept: 0x05,
  Send: 0x06,
  Recv: 0x07,
  Close: 0x08,
  CloseOK: 0x09,
  Error: 0x0a,
  SendTo: 0x0b,
  RecvFrom: 0x0c,
  Info: 0x0d,
  InfoOK: 0x0e,
  Handshake: 0x0f,
  HandshakeOK: 0x10,
  ResolveHostname: 0x11,
  ResolveHostnameOK: 0x12,
  SetHostname: 0x13,
  SetHostnameOK: 0x14,
  SetVisibility: 0x15,
  SetVisibilityOK: 0x16,
  Deregister: 0x17,
  DeregisterOK: 0x18,
  SetTags: 0x19,
  SetTagsOK: 0x1a,
  SetWebhook: 0x1b,
  SetWebhookOK: 0x1c,
  // Not implemented by pilotfish (old-daemon only); decoding them fails and the daemon answers Error.
  SetTaskExec: 0x1d,
  SetTaskExecOK: 0x1e,
  Network: 0x1f,
  NetworkOK: 0x20,
  Health: 0x21,
  HealthOK: 0x22,
  // Not implemented: managed-network engine commands.
  Managed: 0x23,
  ManagedOK: 0x24,
  RotateKey: 0x25,
  RotateKeyOK: 0x26,
  Broadcast: 0x29,
  BroadcastOK: 0x2a,
  Cancel: 0x2b,
  PreferDirect: 0x2d,
  PreferDirectOK: 0x2e,
  // Not implemented: badge / recovery / request-signature envelopes.
  SubmitBadge: 0x2f,
  SubmitBadgeOK: 0x30,
  EnrollRecovery: 0x31,
  EnrollRecoveryOK: 0x32,
  SignEnvelope: 0x33,
  SignEnvelopeOK: 0x34,
  VerifyEnvelope: 0x35,
  VerifyEnvelopeOK: 0x36,
  Unbind: 0x37,
  UnbindOK: 0x38,
  SendToConfirm: 0x39,
  SendToOK: 0x3a
} as const
export type IpcCmdName = keyof typeof IpcCmd

/** Sub-commands: the first payload byte of Handshake (0x0F). */
export const HandshakeSub = {
  Send: 0x01,
  Approve: 0x02,
  Reject: 0x03,
  Pending: 0x04,
  Trusted: 0x05,
  Revoke: 0x06,
  Wait: 0x07
} as const

/** Sub-commands: the first payload byte of Network (0x1F). */
export const NetworkSub = {
  List: 0x01,
  Join: 0x02,
  Leave: 0x03,
  Members: 0x04,
  Invite: 0x05,
  PollInvites: 0x06,
  RespondInvite: 0x07
} as const

/** The code every Go daemon puts in an Error frame; drivers match on the message text. */
export const IPC_GENERIC_ERROR_CODE = 1

// ---------------------------------------------------------------------------------------------------------
// Field codecs
// ---------------------------------------------------------------------------------------------------------

interface Cursor {
  readonly bytes: Uint8Array
  readonly view: DataView
  offset: number
  readonly frame: string
}

/** A validated field value, sized, ready to be written into the frame buffer. */
interface Encoded {
  readonly size: number
  readonly write: (view: DataView, bytes: Uint8Array, offset: number) => void
}

// Method syntax on purpose: it makes `Field<number>` usable where `Field<unknown>` is expected.
interface Field<A> {
  /** Takes every remaining payload byte; only ever the last field of a layout. */
  readonly rest: boolean
  encode(value: A, frame: string, name: string): Result.Result<Encoded, DecodeError>
  decode(cursor: Cursor, name: string): Result.Result<A, DecodeError>
}

/** Errors about one field name it in the frame: `ipc Handshake.Send.node`. */
const at = (frame: string, name: string): string => `${frame}.${name}`

const remaining = (cursor: Cursor): number => cursor.bytes.byteLength - cursor.offset

const need = (cursor: Cursor, name: string, size: number): Result.Result<void, DecodeError> =>
  remaining(cursor) >= size
    ? Result.void
    : decodeFail(at(cursor.frame, name), "short", `needs ${size} bytes at offset ${cursor.offset}, ${remaining(cursor)} left`)

const fixedField = <A>(spec: {
  readonly size: number
  readonly expected: string
  readonly valid: (value: A) => boolean
  readonly write: (view: DataView, offset: number, value: A) => void
  /** `undefined` when the bytes are not a value of the domain. */
  readonly read: (view: DataView, offset: number) => A | undefined
}): Field<A> => ({
  rest: false,
  encode(value, frame, name) {
    return spec.valid(value)
      ? Result.succeed({ size: spec.size, write: (view, _bytes, offset) => spec.write(view, offset, value) })
      : decodeFail(at(frame, name), "invalid", `must be ${spec.expected}`)
  },
  decode(cursor, name) {
    return Result.flatMap(need(cursor, name, spec.size), () => {
      const value = spec.read(cursor.view, cursor.offset)
      if (value === undefined) return decodeFail(at(cursor.frame, name), "invalid", `is not ${spec.expected}`)
      cursor.offset += spec.size
      return Result.succeed(value)
    })
  }
})

const isUint = (max: number) => (value: number): boolean => Number.isInteger(value) && value >= 0 && value <= max

const u16 = fixedField<number>({
  size: 2,
  expected: "an integer 0..65535",
  valid: isUint(0xffff),
  write: (view, offset, value) => view.setUint16(offset, value),
  read: (view, offset) => view.getUint16(offset)
})

const u32 = fixedField<number>({
  size: 4,
  expected: "an integer 0..4294967295",
  valid: isUint(0xffffffff),
  write: (view, offset, value) => view.setUint32(offset, value),
  read: (view, offset) => view.getUint32(offset)
})

/** One byte, 1 = true, 0 = false (the Go daemon reads `b == 1`; anything else is refused here). */
const flag = fixedField<boolean>({
  size: 1,
  expected: "a flag byte 0 or 1",
  valid: (value) => typeof value === "boolean",
  write: (view, offset, value) => view.setUint8(offset, value ? 1 : 0),
  read: (view, offset) => {
    const byte = view.getUint8(offset)
    return byte === 1 ? true : byte === 0 ? false : undefined
  }
})

const addr = fixedField<Addr>({
  size: ADDR_BYTES,
  expected: `an address (network 0..${MAX_NETWORK}, node 0..${MAX_NODE})`,
  valid: isValidAddr,
  write: writeAddr,
  read: readAddr
})

/** Opaque bytes to the end of the payload; decoded as a view, not a copy. */
const bytesRest: Field<Uint8Array> = {
  rest: true,
  encode(value) {
    return Result.succeed({ size: value.byteLength, write: (_view, bytes, offset) => bytes.set(value, offset) })
  },
  decode(cursor) {
    const value = cursor.bytes.subarray(cursor.offset)
    cursor.offset = cursor.bytes.byteLength
    return Result.succeed(value)
  }
}

const prepared = (bytes: Uint8Array): Encoded => ({
  size: bytes.byteLength,
  write: (_view, out, offset) => out.set(bytes, offset)
})

/** Bytes that encode and decode through a pair of byte-level codecs, to the end of the payload. */
const restVia = <A>(
  encode: (value: A, frame: string, name: string) => Result.Result<Uint8Array, DecodeError>,
  decode: (bytes: Uint8Array, frame: string, name: string) => Result.Result<A, DecodeError>
): Field<A> => ({
  rest: true,
  encode(value, frame, name) {
    return Result.map(encode(value, frame, name), prepared)
  },
  decode(cursor, name) {
    return Result.flatMap(bytesRest.decode(cursor, name), (bytes) => decode(bytes, cursor.frame, name))
  }
})

/** UTF-8 text to the end of the payload (hostnames, URLs, justifications, messages). */
const textRest = restVia<string>(
  (value, frame, name) => encodeUtf8(value, at(frame, name)),
  (bytes, frame, name) => decodeUtf8(bytes, at(frame, name))
)

/** JSON to the end of the payload, any JSON type, decoded to `unknown`. */
const jsonRest = restVia<unknown>(
  (value, frame, name) => encodeJson(value, at(frame, name)),
  (bytes, frame, name) => decodeJsonBody(bytes, at(frame, name))
)

/** A JSON array of strings to the end of the payload (SetTags). Policy (≤3, tag syntax) is the daemon's. */
const stringArrayRest = restVia<ReadonlyArray<string>>(
  (value, frame, name) => encodeJson(value, at(frame, name)),
  (bytes, frame, name) =>
    Result.flatMap(decodeJsonBody(bytes, at(frame, name)), (value) =>
      Array.isArray(value) && value.every((item) => typeof item === "string")
        ? Result.succeed(value as ReadonlyArray<string>)
        : decodeFail(at(frame, name), "invalid", "expected a JSON array of strings"))
)

/** UTF-8 text behind its own u16 byte length (Broadcast's admin token). */
const text16: Field<string> = {
  rest: false,
  encode(value, frame, name) {
    return Result.flatMap(encodeUtf8(value, at(frame, name)), (bytes) =>
      bytes.byteLength > 0xffff
        ? decodeFail(at(frame, name), "oversize", `is ${bytes.byteLength} bytes, its u16 length allows 65535`)
        : Result.succeed({
          size: 2 + bytes.byteLength,
          write: (view, out, offset) => {
            view.setUint16(offset, bytes.byteLength)
            out.set(bytes, offset + 2)
          }
        }))
  },
  decode(cursor, name) {
    return Result.flatMap(u16.decode(cursor, `${name} length`), (length) =>
      Result.flatMap(need(cursor, name, length), () => {
        const bytes = cursor.bytes.subarray(cursor.offset, cursor.offset + length)
        cursor.offset += length
        return decodeUtf8(bytes, at(cursor.frame, name))
      }))
  }
}

// ---------------------------------------------------------------------------------------------------------
// Layouts
// ---------------------------------------------------------------------------------------------------------

type Fields = { readonly [name: string]: Field<unknown> }
type FieldValues<F extends Fields> = { readonly [K in keyof F]: F[K] extends Field<infer A> ? A : never }

interface StructLayout<F extends Fields> {
  readonly _tag: "struct"
  /** Wire order is the key order of this object. */
  readonly fields: F
  /** `fields` as an array, computed once: the walks below run per message. */
  readonly entries: ReadonlyArray<readonly [string, Field<unknown>]>
  /** Bytes after the last field are allowed only if it takes the rest, or if the command ignores them. */
  readonly allowsTrailing: boolean
}

type SubTable = { readonly [sub: string]: { readonly code: number; readonly layout: StructLayout<Fields> } }

/** `[sub u8][…]`: the first payload byte picks the layout of the rest. */
interface SwitchLayout<T extends SubTable> {
  readonly _tag: "switch"
  readonly subs: T
  readonly nameByCode: ReadonlyMap<number, string>
}

type Layout = StructLayout<Fields> | SwitchLayout<SubTable>

const struct = <const F extends Fields>(fields: F, options?: { readonly ignoreTrailing: true }): StructLayout<F> => {
  const entries = Object.entries(fields)
  return {
    _tag: "struct",
    fields,
    entries,
    allowsTrailing: options?.ignoreTrailing === true || entries.at(-1)?.[1].rest === true
  }
}

const subcommands = <const T extends SubTable>(subs: T): SwitchLayout<T> => ({
  _tag: "switch",
  subs,
  nameByCode: new Map(Object.entries(subs).map(([name, entry]) => [entry.code, name]))
})

const sub = <F extends Fields>(code: number, layout: StructLayout<F>) => ({ code, layout })

const empty = struct({})
const portOnly = struct({ port: u16 })
const connIdOnly = struct({ connId: u32 })
const nodeOnly = struct({ node: u32 })
const networkOnly = struct({ network: u16 })
const connData = struct({ connId: u32, data: bytesRest })
const datagramOut = struct({ addr, port: u16, data: bytesRest })
const jsonReply = struct({ json: jsonRest })
const hostnameText = struct({ hostname: textRest })

const layouts = {
  Bind: portOnly,
  BindOK: portOnly,
  Dial: struct({ addr, port: u16 }),
  DialOK: connIdOnly,
  Accept: struct({ localPort: u16, connId: u32, remoteAddr: addr, remotePort: u16 }),
  Send: connData,
  Recv: connData,
  Close: connIdOnly,
  CloseOK: connIdOnly,
  Error: struct({ code: u16, message: textRest }),
  SendTo: datagramOut,
  RecvFrom: struct({ srcAddr: addr, srcPort: u16, dstPort: u16, data: bytesRest }),
  Info: empty,
  InfoOK: jsonReply,
  Handshake: subcommands({
    Send: sub(HandshakeSub.Send, struct({ node: u32, justification: textRest })),
    Approve: sub(HandshakeSub.Approve, nodeOnly),
    Reject: sub(HandshakeSub.Reject, struct({ node: u32, reason: textRest })),
    Pending: sub(HandshakeSub.Pending, empty),
    Trusted: sub(HandshakeSub.Trusted, empty),
    Revoke: sub(HandshakeSub.Revoke, nodeOnly),
    Wait: sub(HandshakeSub.Wait, struct({ node: u32, timeoutMs: u32 }))
  }),
  HandshakeOK: jsonReply,
  ResolveHostname: hostnameText,
  ResolveHostnameOK: jsonReply,
  SetHostname: hostnameText,
  SetHostnameOK: jsonReply,
  SetVisibility: struct({ public: flag }),
  SetVisibilityOK: jsonReply,
  Deregister: empty,
  DeregisterOK: jsonReply,
  SetTags: struct({ tags: stringArrayRest }),
  SetTagsOK: jsonReply,
  SetWebhook: struct({ url: textRest }),
  SetWebhookOK: jsonReply,
  Network: subcommands({
    List: sub(NetworkSub.List, empty),
    Join: sub(NetworkSub.Join, struct({ network: u16, token: textRest })),
    Leave: sub(NetworkSub.Leave, networkOnly),
    Members: sub(NetworkSub.Members, networkOnly),
    Invite: sub(NetworkSub.Invite, struct({ network: u16, node: u32 })),
    PollInvites: sub(NetworkSub.PollInvites, empty),
    RespondInvite: sub(NetworkSub.RespondInvite, struct({ network: u16, accept: flag }))
  }),
  NetworkOK: jsonReply,
  Health: empty,
  HealthOK: jsonReply,
  RotateKey: empty,
  RotateKeyOK: jsonReply,
  Broadcast: struct({ network: u16, port: u16, token: text16, data: bytesRest }),
  BroadcastOK: empty,
  Cancel: struct({}, { ignoreTrailing: true }),
  PreferDirect: nodeOnly,
  PreferDirectOK: jsonReply,
  Unbind: portOnly,
  UnbindOK: portOnly,
  SendToConfirm: datagramOut,
  SendToOK: empty
} satisfies { readonly [K in IpcCmdName]?: Layout }

type Layouts = typeof layouts

type Simplify<T> = T extends unknown ? { readonly [K in keyof T]: T[K] } : never

type LayoutMessage<L> = L extends StructLayout<infer F> ? FieldValues<F>
  : L extends SwitchLayout<infer T> ?
    { [S in keyof T & string]: { readonly sub: S } & FieldValues<T[S]["layout"]["fields"]> }[keyof T & string]
  : never

/** Every IPC message pilotfish speaks, tagged by `cmd` (and, for Handshake and Network, by `sub`). */
export type IpcMessage = { [K in keyof Layouts]: Simplify<{ readonly cmd: K } & LayoutMessage<Layouts[K]>> }[keyof Layouts]
export type IpcMessageOf<K extends IpcMessage["cmd"]> = Extract<IpcMessage, { readonly cmd: K }>

/** Command codes pilotfish decodes; the rest of `IpcCmd` is known but refused (the daemon answers Error). */
export const isImplementedIpcCommand = (code: number): boolean => commandByCode.has(code)

const commandByCode: ReadonlyMap<number, { readonly name: string; readonly layout: Layout }> = new Map(
  Object.entries(layouts as { readonly [name: string]: Layout }).map(([name, layout]) => [
    IpcCmd[name as IpcCmdName],
    { name, layout }
  ])
)

// ---------------------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------------------

type FieldBag = { readonly [key: string]: unknown }

const encodeFields = (
  layout: StructLayout<Fields>,
  message: FieldBag,
  frame: string,
  parts: Array<Encoded>
): Result.Result<void, DecodeError> => {
  for (const [name, field] of layout.entries) {
    const encoded = field.encode(message[name], frame, name)
    if (Result.isFailure(encoded)) return Result.fail(encoded.failure)
    parts.push(encoded.success)
  }
  return Result.void
}

const leadByte = (value: number): Encoded => ({ size: 1, write: (view, _bytes, offset) => view.setUint8(offset, value) })

/**
 * The complete frame (length prefix, command byte, payload) in one buffer, ready for a single socket write.
 * Fails with `invalid` for a field outside its wire domain (a port above 65535, lone surrogates in text, a
 * value JSON cannot carry) and with `oversize` when the body would pass the 1 MiB limit.
 */
export const encodeIpcFrame = (message: IpcMessage): Result.Result<Uint8Array, DecodeError> => {
  const fields = message as unknown as FieldBag
  const layout: Layout = layouts[message.cmd]
  const parts: Array<Encoded> = [leadByte(IpcCmd[message.cmd])]
  let frame = `ipc ${message.cmd}`
  let fieldLayout: StructLayout<Fields>
  if (layout._tag === "switch") {
    const subName = String(fields["sub"])
    const entry = Object.hasOwn(layout.subs, subName) ? layout.subs[subName] : undefined
    if (entry === undefined) return decodeFail(frame, "invalid", `unknown sub-command ${subName}`)
    frame = `${frame}.${subName}`
    parts.push(leadByte(entry.code))
    fieldLayout = entry.layout
  } else {
    fieldLayout = layout
  }
  const done = encodeFields(fieldLayout, fields, frame, parts)
  if (Result.isFailure(done)) return Result.fail(done.failure)
  const bodyLength = parts.reduce((total, part) => total + part.size, 0)
  return Result.map(
    Result.mapError(allocateFrame(bodyLength), (error) => new DecodeError({ frame, reason: error.reason, detail: error.detail })),
    (out) => {
      const view = new DataView(out.buffer)
      let offset = LENGTH_PREFIX_BYTES
      for (const part of parts) {
        part.write(view, out, offset)
        offset += part.size
      }
      return out
    }
  )
}

// ---------------------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------------------

const hex = (code: number): string => `0x${code.toString(16).toUpperCase().padStart(2, "0")}`

const decodeFields = (
  layout: StructLayout<Fields>,
  cursor: Cursor,
  out: { [key: string]: unknown }
): Result.Result<void, DecodeError> => {
  for (const [name, field] of layout.entries) {
    const value = field.decode(cursor, name)
    if (Result.isFailure(value)) return Result.fail(value.failure)
    out[name] = value.success
  }
  if (remaining(cursor) > 0 && !layout.allowsTrailing) {
    return decodeFail(cursor.frame, "inconsistent", `${remaining(cursor)} unexpected bytes after the last field`)
  }
  return Result.void
}

/**
 * Decodes one IPC body (`[cmd][payload]`, as the length-prefixed splitter yields it). Byte fields are views
 * into `body`. Unknown and unimplemented command or sub-command codes fail with `bad_magic`.
 */
export const decodeIpcBody = (body: Uint8Array): Result.Result<IpcMessage, DecodeError> => {
  if (body.byteLength === 0) return decodeFail("ipc", "short", "empty body, no command byte")
  const code = body[0] as number
  const command = commandByCode.get(code)
  if (command === undefined) {
    const known = Object.entries(IpcCmd).find(([, value]) => value === code)
    return decodeFail("ipc", "bad_magic", known === undefined ? `unknown command ${hex(code)}` : `command ${known[0]} (${hex(code)}) is not supported`)
  }
  const out: { [key: string]: unknown } = { cmd: command.name }
  let frame = `ipc ${command.name}`
  let payload = body.subarray(1)
  let layout: StructLayout<Fields>
  if (command.layout._tag === "switch") {
    if (payload.byteLength === 0) return decodeFail(frame, "short", "missing sub-command byte")
    const subCode = payload[0] as number
    const subName = command.layout.nameByCode.get(subCode)
    const entry = subName === undefined ? undefined : command.layout.subs[subName]
    if (subName === undefined || entry === undefined) return decodeFail(frame, "bad_magic", `unknown sub-command ${hex(subCode)}`)
    out["sub"] = subName
    frame = `${frame}.${subName}`
    layout = entry.layout
    payload = payload.subarray(1)
  } else {
    layout = command.layout
  }
  const cursor: Cursor = {
    bytes: payload,
    view: new DataView(payload.buffer, payload.byteOffset, payload.byteLength),
    offset: 0,
    frame
  }
  return Result.map(decodeFields(layout, cursor, out), () => out as unknown as IpcMessage)
}

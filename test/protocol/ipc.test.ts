import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import type { DecodeError } from "../../src/protocol/errors.ts"
import {
  decodeIpcBody,
  encodeIpcFrame,
  IpcCmd,
  type IpcMessage,
  type IpcMessageOf,
  isImplementedIpcCommand
} from "../../src/protocol/ipc.ts"
import { LENGTH_PREFIX_BYTES, makeFrameSplitter, MAX_FRAME_BODY } from "../../src/protocol/length-prefixed.ts"
import { failure, ok } from "./arbitraries.ts"


const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex")
const fromHex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text.replace(/\s+/g, ""), "hex"))
const body = (frame: Uint8Array): Uint8Array => frame.subarray(LENGTH_PREFIX_BYTES)

// ---------------------------------------------------------------------------------------------------------
// Arbitraries: one per command, typed so that a command missing here is a compile error
// ---------------------------------------------------------------------------------------------------------

const u16 = fc.integer({ min: 0, max: 0xffff })
const u32 = fc.integer({ min: 0, max: 0xffffffff })
const addr = fc.record({ network: u16, node: u32 })
const data = fc.uint8Array({ maxLength: 200 })
const text = fc.string({ unit: "binary", maxLength: 40 })
const json = fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.parse(JSON.stringify(value)) as unknown)

type Cmd = IpcMessage["cmd"]
const is = <K extends Cmd>(cmd: K) => <F extends object>(fields: fc.Arbitrary<F>) =>
  fields.map((f) => ({ cmd, ...f }) as unknown as IpcMessageOf<K>)
const none = fc.constant({})

const arbitraries: { readonly [K in Cmd]: fc.Arbitrary<IpcMessageOf<K>> } = {
  Bind: is("Bind")(fc.record({ port: u16 })),
  BindOK: is("BindOK")(fc.record({ port: u16 })),
  Dial: is("Dial")(fc.record({ addr, port: u16 })),
  DialOK: is("DialOK")(fc.record({ connId: u32 })),
  Accept: is("Accept")(fc.record({ localPort: u16, connId: u32, remoteAddr: addr, remotePort: u16 })),
  Send: is("Send")(fc.record({ connId: u32, data })),
  Recv: is("Recv")(fc.record({ connId: u32, data })),
  Close: is("Close")(fc.record({ connId: u32 })),
  CloseOK: is("CloseOK")(fc.record({ connId: u32 })),
  Error: is("Error")(fc.record({ code: u16, message: text })),
  SendTo: is("SendTo")(fc.record({ addr, port: u16, data })),
  RecvFrom: is("RecvFrom")(fc.record({ srcAddr: addr, srcPort: u16, dstPort: u16, data })),
  Info: is("Info")(none),
  InfoOK: is("InfoOK")(fc.record({ json })),
  Handshake: is("Handshake")(fc.oneof(
    fc.record({ sub: fc.constant("Send"), node: u32, justification: text }),
    fc.record({ sub: fc.constant("Approve"), node: u32 }),
    fc.record({ sub: fc.constant("Reject"), node: u32, reason: text }),
    fc.record({ sub: fc.constant("Pending") }),
    fc.record({ sub: fc.constant("Trusted") }),
    fc.record({ sub: fc.constant("Revoke"), node: u32 }),
    fc.record({ sub: fc.constant("Wait"), node: u32, timeoutMs: u32 })
  )),
  HandshakeOK: is("HandshakeOK")(fc.record({ json })),
  ResolveHostname: is("ResolveHostname")(fc.record({ hostname: text })),
  ResolveHostnameOK: is("ResolveHostnameOK")(fc.record({ json })),
  SetHostname: is("SetHostname")(fc.record({ hostname: text })),
  SetHostnameOK: is("SetHostnameOK")(fc.record({ json })),
  SetVisibility: is("SetVisibility")(fc.record({ public: fc.boolean() })),
  SetVisibilityOK: is("SetVisibilityOK")(fc.record({ json })),
  Deregister: is("Deregister")(none),
  DeregisterOK: is("DeregisterOK")(fc.record({ json })),
  SetTags: is("SetTags")(fc.record({ tags: fc.array(text, { maxLength: 5 }) })),
  SetTagsOK: is("SetTagsOK")(fc.record({ json })),
  SetWebhook: is("SetWebhook")(fc.record({ url: text })),
  SetWebhookOK: is("SetWebhookOK")(fc.record({ json })),
  Network: is("Network")(fc.oneof(
    fc.record({ sub: fc.constant("List") }),
    fc.record({ sub: fc.constant("Join"), network: u16, token: text }),
    fc.record({ sub: fc.constant("Leave"), network: u16 }),
    fc.record({ sub: fc.constant("Members"), network: u16 }),
    fc.record({ sub: fc.constant("Invite"), network: u16, node: u32 }),
    fc.record({ sub: fc.constant("PollInvites") }),
    fc.record({ sub: fc.constant("RespondInvite"), network: u16, accept: fc.boolean() })
  )),
  NetworkOK: is("NetworkOK")(fc.record({ json })),
  Health: is("Health")(none),
  HealthOK: is("HealthOK")(fc.record({ json })),
  RotateKey: is("RotateKey")(none),
  RotateKeyOK: is("RotateKeyOK")(fc.record({ json })),
  Broadcast: is("Broadcast")(fc.record({ network: u16, port: u16, token: text, data })),
  BroadcastOK: is("BroadcastOK")(none),
  Cancel: is("Cancel")(none),
  PreferDirect: is("PreferDirect")(fc.record({ node: u32 })),
  PreferDirectOK: is("PreferDirectOK")(fc.record({ json })),
  Unbind: is("Unbind")(fc.record({ port: u16 })),
  UnbindOK: is("UnbindOK")(fc.record({ port: u16 })),
  SendToConfirm: is("SendToConfirm")(fc.record({ addr, port: u16, data })),
  SendToOK: is("SendToOK")(none)
}

const anyMessage: fc.Arbitrary<IpcMessage> = fc.oneof(...Object.values(arbitraries) as Array<fc.Arbitrary<IpcMessage>>)

/** Messages whose payload re-encodes byte for byte (JSON text may be respelled, Cancel drops extra bytes). */
const isCanonical = (message: IpcMessage): boolean =>
  !("json" in message) && !("tags" in message) && message.cmd !== "Cancel"

// ---------------------------------------------------------------------------------------------------------

describe("IPC round trip", () => {
  it("decodes what it encodes, for every command and sub-command", () => {
    for (const [cmd, arbitrary] of Object.entries(arbitraries)) {
      fc.assert(
        fc.property(arbitrary as fc.Arbitrary<IpcMessage>, (message) => {
          const frame = ok(encodeIpcFrame(message))
          const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength)
          expect(view.getUint32(0)).toBe(frame.byteLength - LENGTH_PREFIX_BYTES)
          expect(frame[LENGTH_PREFIX_BYTES]).toBe(IpcCmd[message.cmd])
          expect(ok(decodeIpcBody(body(frame)))).toEqual(message)
        }),
        { numRuns: 40 }
      )
      expect(isImplementedIpcCommand(IpcCmd[cmd as Cmd])).toBe(true)
    }
  })

  it("survives the stream splitter with arbitrary chunking", () => {
    fc.assert(
      fc.property(fc.array(anyMessage, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 16 }), (messages, cuts) => {
        const frames = messages.map((message) => ok(encodeIpcFrame(message)))
        const stream = Uint8Array.from(Buffer.concat(frames))
        const points = [...new Set(cuts.map((c) => c % (stream.byteLength + 1))), stream.byteLength].sort((a, b) => a - b)
        const splitter = makeFrameSplitter()
        const decoded: Array<IpcMessage> = []
        let start = 0
        for (const point of points) {
          for (const b of ok(splitter.push(stream.subarray(start, point)))) decoded.push(ok(decodeIpcBody(b)))
          start = point
        }
        expect(decoded).toEqual(messages)
      }),
      { numRuns: 200 }
    )
  })
})

describe("IPC wire bytes", () => {
  it("encodes Dial, Accept, Error and Handshake Wait as the reference lays them out", () => {
    // Dial 0:0000.0000.0005 port 1001: [len 9][0x03][net 0][node 5][port 1001]
    expect(hex(ok(encodeIpcFrame({ cmd: "Dial", addr: { network: 0, node: 5 }, port: 1001 }))))
      .toBe("00000009" + "03" + "0000" + "00000005" + "03e9")
    // Accept push: [local port][conn id][remote addr][remote port]
    expect(hex(ok(encodeIpcFrame({
      cmd: "Accept",
      localPort: 1000,
      connId: 7,
      remoteAddr: { network: 1, node: 0x0a0b0c0d },
      remotePort: 49152
    })))).toBe("0000000f" + "05" + "03e8" + "00000007" + "0001" + "0a0b0c0d" + "c000")
    expect(hex(ok(encodeIpcFrame({ cmd: "Error", code: 1, message: "no" })))).toBe("00000005" + "0a" + "0001" + "6e6f")
    expect(hex(ok(encodeIpcFrame({ cmd: "Handshake", sub: "Wait", node: 5, timeoutMs: 30000 }))))
      .toBe("0000000a" + "0f" + "07" + "00000005" + "00007530")
  })

  it("decodes a Go driver's Broadcast and SetTags", () => {
    expect(ok(decodeIpcBody(fromHex("29 0002 0007 0003 746f6b 6869")))).toEqual({
      cmd: "Broadcast",
      network: 2,
      port: 7,
      token: "tok",
      data: new Uint8Array([0x68, 0x69])
    })
    expect(ok(decodeIpcBody(new Uint8Array([0x19, ...new TextEncoder().encode("[\"ml\",\"gpu\"]")]))))
      .toEqual({ cmd: "SetTags", tags: ["ml", "gpu"] })
  })
})

describe("IPC decoding failures", () => {
  const cases: ReadonlyArray<readonly [string, string, DecodeError["reason"], string]> = [
    ["empty body", "", "short", "no command byte"],
    ["unknown command", "ff", "bad_magic", "unknown command 0xFF"],
    ["Managed is not implemented", "23 02", "bad_magic", "Managed"],
    ["SignEnvelope is not implemented", "33 7b7d", "bad_magic", "SignEnvelope"],
    ["Bind without a port", "01 00", "short", "port"],
    ["Bind with a trailing byte", "01 0050 00", "inconsistent", "1 unexpected"],
    ["Dial with a truncated address", "03 0000 0000", "short", "addr"],
    ["Accept without the remote port", "05 03e8 00000007 0001 0a0b0c0d", "short", "remotePort"],
    ["Send without a full connection ID", "06 0000", "short", "connId"],
    ["Handshake without a sub-command", "0f", "short", "sub-command"],
    ["Handshake with an unknown sub-command", "0f 09", "bad_magic", "0x09"],
    ["Handshake Send without a node", "0f 01 0000", "short", "node"],
    ["Handshake Wait without a timeout", "0f 07 00000005", "short", "timeoutMs"],
    ["Network Invite without a node", "1f 05 0001", "short", "node"],
    ["Network RespondInvite with flag 2", "1f 07 0001 02", "invalid", "accept"],
    ["SetVisibility with flag 7", "15 07", "invalid", "public"],
    ["Broadcast whose token runs past the payload", "29 0001 0002 0009 6162", "short", "token"],
    ["Broadcast without a token length", "29 0001 0002", "short", "token length"],
    ["ResolveHostname with invalid UTF-8", "11 c328", "invalid", "UTF-8"],
    ["Error with invalid UTF-8", "0a 0001 ff", "invalid", "UTF-8"],
    ["InfoOK that is not JSON", "0e 7b", "invalid", "JSON"],
    ["SetTags that is not a string array", "19 5b315d", "invalid", "array of strings"],
    ["Info with a payload", "0d 00", "inconsistent", "unexpected"]
  ]
  for (const [name, bytes, reason, detail] of cases) {
    it(`types ${name} as ${reason}`, () => {
      const error = failure(decodeIpcBody(fromHex(bytes)))
      expect(error.reason).toBe(reason)
      expect(error.message).toContain(detail)
    })
  }

  it("ignores a Cancel payload, as the reference says", () => {
    expect(ok(decodeIpcBody(fromHex("2b 0102")))).toEqual({ cmd: "Cancel" })
  })

  it("never throws on random bodies", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
        const result = decodeIpcBody(bytes)
        if (Result.isSuccess(result)) expect(Object.hasOwn(IpcCmd, result.success.cmd)).toBe(true)
      }),
      { numRuns: 1000 }
    )
  })

  it("never throws on mutated frames, and what it accepts is canonical", () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
      fc.record({ kind: fc.constant("append" as const), extra: fc.uint8Array({ minLength: 1, maxLength: 8 }) })
    )
    fc.assert(
      fc.property(anyMessage, fc.array(mutation, { minLength: 1, maxLength: 3 }), (message, mutations) => {
        let bytes = Uint8Array.from(body(ok(encodeIpcFrame(message))))
        for (const m of mutations) {
          if (m.kind === "flip" && bytes.byteLength > 0) bytes[m.at % bytes.byteLength] = m.value
          if (m.kind === "truncate") bytes = bytes.subarray(0, m.at % (bytes.byteLength + 1))
          if (m.kind === "append") bytes = Uint8Array.from([...bytes, ...m.extra])
        }
        const result = decodeIpcBody(bytes)
        if (Result.isSuccess(result) && isCanonical(result.success)) {
          expect(hex(body(ok(encodeIpcFrame(result.success))))).toBe(hex(bytes))
        }
      }),
      { numRuns: 1000 }
    )
  })
})

describe("IPC encoding failures", () => {
  it("refuses values outside the wire domain", () => {
    const invalid: ReadonlyArray<readonly [IpcMessage, string]> = [
      [{ cmd: "Bind", port: 65536 }, "port"],
      [{ cmd: "Bind", port: -1 }, "port"],
      [{ cmd: "Close", connId: 1.5 }, "connId"],
      [{ cmd: "PreferDirect", node: 0x1_0000_0000 }, "node"],
      [{ cmd: "Dial", addr: { network: 70000, node: 1 }, port: 1 }, "addr"],
      [{ cmd: "SetHostname", hostname: "a\uDC00" }, "hostname"],
      [{ cmd: "InfoOK", json: undefined }, "json"],
      [{ cmd: "InfoOK", json: 1n }, "json"]
    ]
    for (const [message, field] of invalid) {
      const error = failure(encodeIpcFrame(message))
      expect(error.reason).toBe("invalid")
      expect(error.message).toContain(field)
    }
  })

  it("refuses a Broadcast token longer than its u16 length allows", () => {
    const error = failure(encodeIpcFrame({ cmd: "Broadcast", network: 1, port: 1, token: "x".repeat(65536), data: new Uint8Array(0) }))
    expect(error.reason).toBe("oversize")
  })

  it("counts the command byte in the 1 MiB limit", () => {
    const payloadRoom = MAX_FRAME_BODY - 1 - 4 // command byte and connection ID
    expect(ok(encodeIpcFrame({ cmd: "Send", connId: 1, data: new Uint8Array(payloadRoom) })).byteLength)
      .toBe(LENGTH_PREFIX_BYTES + MAX_FRAME_BODY)
    const error = failure(encodeIpcFrame({ cmd: "Recv", connId: 1, data: new Uint8Array(payloadRoom + 1) }))
    expect(error.reason).toBe("oversize")
    expect(error.frame).toBe("ipc Recv")
  })
})

/**
 * The data-exchange service on port 1001 between two data planes on loopback (real UDP, encrypted tunnel):
 * messages saved to the inbox and acknowledged, files saved intact under sanitised names, bad frames ending only
 * their own connection, a failing disk answered with ERR while the service goes on. Every test ends with the
 * lifecycle check and the files on disk.
 */
import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Fiber, Scope } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { makeEventBus } from "../../src/events/event-bus.ts"
import { formatAddr } from "../../src/protocol/address.ts"
import { DataFrameType, encodeFilePayload } from "../../src/protocol/data-exchange.ts"
import { Result } from "effect"
import { DATA_EXCHANGE_PORT, fileTimestamp, receivedFileName, sanitiseFileName } from "../../src/services/data-exchange.ts"
import { expectNoLeaks } from "../support/leak-check.ts"
import { A, B, dataFrame, eventually, frameReader, newDirectory, startPlane } from "./service-kit.ts"

const encoder = new TextEncoder()

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "pf-dx-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const filePayload = (name: string, data: Uint8Array) => {
  const payload = encodeFilePayload({ name, data })
  if (Result.isFailure(payload)) throw payload.failure
  return payload.success
}

const setup = (dataDirectory: string, extra: { readonly readTimeout?: Duration.Input } = {}) =>
  Effect.gen(function*() {
    const bus = yield* makeEventBus
    const seen = yield* bus.subscribe()
    const directory = newDirectory()
    const a = yield* startPlane(directory, A)
    const b = yield* startPlane(directory, B, { dataDirectory, events: bus, dataExchange: extra.readTimeout === undefined ? {} : { readTimeout: extra.readTimeout } })
    const dial = a.plane.transport.dial({ network: 0, node: B }, DATA_EXCHANGE_PORT)
    return { a, b, dial, seen, bus }
  })

describe("file names", () => {
  it("hostile names keep only a bounded, safe last component", () => {
    assert.deepStrictEqual(sanitiseFileName("../../etc/passwd"), { base: "passwd", ext: "" })
    assert.deepStrictEqual(sanitiseFileName(".."), { base: "file", ext: "" })
    assert.deepStrictEqual(sanitiseFileName("a\\b\\..\\c.TXT"), { base: "c", ext: ".TXT" })
    assert.deepStrictEqual(sanitiseFileName(".bashrc"), { base: "bashrc", ext: "" })
    assert.deepStrictEqual(sanitiseFileName("ev\u0000il\n.sh"), { base: "evil", ext: ".sh" })
    assert.deepStrictEqual(sanitiseFileName("x.tar.gz"), { base: "x.tar", ext: ".gz" })
    assert.strictEqual(sanitiseFileName("y".repeat(5000)).base.length, 100)
    assert.strictEqual(fileTimestamp(Date.UTC(2026, 0, 2, 3, 4, 5, 6)), "20260102-030405.006")
    assert.strictEqual(receivedFileName("report.pdf", Date.UTC(2026, 0, 2, 3, 4, 5, 6)), "report-20260102-030405.006.pdf")
  })
})

describe("data exchange on port 1001", () => {
  it.live("TEXT, JSON and BINARY are acknowledged and saved to the inbox; message.received is published", () =>
    expectNoLeaks(Effect.gen(function*() {
      const dir = yield* tempDir
      const { a, b, dial, seen } = yield* setup(dir)
      const connection = yield* dial
      const replies = frameReader(connection)
      yield* connection.write(dataFrame({ type: DataFrameType.Text, payload: encoder.encode("hello") }))
      assert.strictEqual(yield* replies.next, "ACK TEXT 5 bytes")
      yield* connection.write(dataFrame({ type: DataFrameType.Json, payload: encoder.encode("{\"k\":1}") }))
      yield* connection.write(dataFrame({ type: DataFrameType.Binary, payload: new Uint8Array([0, 1, 255]) }))
      assert.strictEqual(yield* replies.next, "ACK JSON 7 bytes")
      assert.strictEqual(yield* replies.next, "ACK BINARY 3 bytes")
      yield* connection.close
      assert.isUndefined(yield* replies.next)

      const inbox = path.join(dir, "inbox")
      const files = fs.readdirSync(inbox).sort()
      assert.strictEqual(files.length, 3)
      const records = files.map((f) => JSON.parse(fs.readFileSync(path.join(inbox, f), "utf8")) as Record<string, unknown>)
      const byType = Object.fromEntries(records.map((r) => [r["type"], r]))
      const from = formatAddr({ network: 0, node: A })
      assert.deepInclude(byType["text"], { type: "text", from, data: "hello", bytes: 5 })
      assert.deepInclude(byType["json"], { type: "json", from, data: "{\"k\":1}", bytes: 7 })
      assert.deepInclude(byType["binary"], { type: "binary", from, data: Buffer.from([0, 1, 255]).toString("base64"), bytes: 3 })
      for (const f of files) {
        assert.match(f, /^(TEXT|JSON|BINARY)-\d{8}-\d{6}\.\d{3}(-\d+)?\.json$/)
        assert.strictEqual(fs.statSync(path.join(inbox, f)).mode & 0o777, 0o600)
      }
      assert.strictEqual((yield* seen.take).name, "message.received")
      assert.strictEqual(b.services.dataExchange.stats().messages, 3)
      assert.strictEqual(a.plane.tunnel.stats().tunnel_encryption_failure, 0)
    })), 60_000)

  it.live("a 5 MB file arrives intact; hostile names are saved inside received/ only", () =>
    expectNoLeaks(Effect.gen(function*() {
      const root = yield* tempDir
      const dir = path.join(root, "data")
      const { b, dial, seen } = yield* setup(dir)
      const data = new Uint8Array(5 * 1024 * 1024).map((_, i) => (i * 2654435761) >>> 24)
      const connection = yield* dial
      const replies = frameReader(connection)
      yield* connection.write(dataFrame({ type: DataFrameType.File, payload: filePayload("report.pdf", data) }))
      assert.strictEqual(yield* replies.next, `ACK FILE ${data.byteLength} bytes`)
      const hostile = ["../../etc/passwd", "..", "/abs/path/x.sh", "..\\..\\win.ini", "\u0001\u0002"]
      for (const name of hostile) {
        yield* connection.write(dataFrame({ type: DataFrameType.File, payload: filePayload(name, encoder.encode(name)) }))
        assert.strictEqual(yield* replies.next, `ACK FILE ${encoder.encode(name).byteLength} bytes`)
      }
      yield* connection.close

      const received = path.join(dir, "received")
      const files = fs.readdirSync(received)
      assert.strictEqual(files.length, 1 + hostile.length)
      const report = files.find((f) => f.startsWith("report-"))!
      assert.match(report, /^report-\d{8}-\d{6}\.\d{3}\.pdf$/)
      const saved = fs.readFileSync(path.join(received, report))
      assert.strictEqual(createHash("sha256").update(saved).digest("hex"), createHash("sha256").update(data).digest("hex"))
      assert.strictEqual(fs.statSync(path.join(received, report)).mode & 0o777, 0o600)
      assert.isDefined(files.find((f) => f.startsWith("passwd-")))
      assert.isDefined(files.find((f) => f.startsWith("win-") && f.endsWith(".ini")))
      // Nothing escaped: the data directory holds received/ only, and no file anywhere above it appeared.
      assert.deepStrictEqual(fs.readdirSync(dir), ["received"])
      assert.deepStrictEqual(fs.readdirSync(root), ["data"])
      const event = yield* seen.take
      assert.strictEqual(event.name, "file.received")
      assert.strictEqual(event.data["bytes"], data.byteLength)
      assert.strictEqual(b.services.dataExchange.stats().files, 1 + hostile.length)
    })), 90_000)

  it.live("a malformed or oversize frame resets only its own connection", () =>
    expectNoLeaks(Effect.gen(function*() {
      const dir = yield* tempDir
      const { b, dial } = yield* setup(dir)
      const good = yield* dial
      const goodReplies = frameReader(good)

      const unknownType = yield* dial
      const header = new Uint8Array(8)
      new DataView(header.buffer).setUint32(0, 9)
      yield* unknownType.write(header)
      const first = yield* Effect.exit(frameReader(unknownType).next)
      assert.isTrue(Exit.isFailure(first) || (Exit.isSuccess(first) && first.value === undefined))

      const oversize = yield* dial
      new DataView(header.buffer).setUint32(0, DataFrameType.Text)
      new DataView(header.buffer).setUint32(4, 16 * 1024 * 1024 + 1)
      yield* oversize.write(header)
      const second = yield* Effect.exit(frameReader(oversize).next)
      assert.isTrue(Exit.isFailure(second) || (Exit.isSuccess(second) && second.value === undefined))

      yield* good.write(dataFrame({ type: DataFrameType.Text, payload: encoder.encode("still here") }))
      assert.strictEqual(yield* goodReplies.next, "ACK TEXT 10 bytes")
      yield* good.close
      assert.strictEqual(b.services.dataExchange.stats().malformed, 2)
      yield* eventually("the good connection finished", () => b.services.dataExchange.stats().failures === 0 && b.plane.transport.stats().connections === 0)
      assert.strictEqual(fs.readdirSync(path.join(dir, "inbox")).length, 1)
    })), 60_000)

  it.live("a sender that stalls mid-frame is cut off after the read deadline", () =>
    expectNoLeaks(Effect.gen(function*() {
      const dir = yield* tempDir
      const { b, dial } = yield* setup(dir, { readTimeout: "300 millis" })
      const connection = yield* dial
      yield* connection.write(dataFrame({ type: DataFrameType.Text, payload: encoder.encode("complete") }).subarray(0, 10))
      const outcome = yield* Effect.exit(frameReader(connection).next)
      assert.isTrue(Exit.isFailure(outcome) || (Exit.isSuccess(outcome) && outcome.value === undefined))
      assert.strictEqual(b.services.dataExchange.stats().stalled, 1)
      assert.isFalse(fs.existsSync(path.join(dir, "inbox")))
    })), 60_000)

  it.live("a failing disk is answered with ERR, counted, and the service keeps serving", () =>
    expectNoLeaks(Effect.gen(function*() {
      const root = yield* tempDir
      const dir = path.join(root, "not-a-directory")
      fs.writeFileSync(dir, "a regular file where the data directory should be")
      const { b, dial, seen } = yield* setup(dir)
      const connection = yield* dial
      const replies = frameReader(connection)
      yield* connection.write(dataFrame({ type: DataFrameType.Text, payload: encoder.encode("lost") }))
      assert.match((yield* replies.next)!, /^ERR TEXT save failed: /)
      yield* connection.write(dataFrame({ type: DataFrameType.File, payload: filePayload("f.txt", encoder.encode("x")) }))
      assert.match((yield* replies.next)!, /^ERR FILE save failed: /)
      assert.strictEqual(b.services.dataExchange.stats().save_failures, 2)

      // The disk recovers: the same connection is served again.
      fs.rmSync(dir)
      fs.mkdirSync(dir)
      yield* connection.write(dataFrame({ type: DataFrameType.Text, payload: encoder.encode("saved") }))
      assert.strictEqual(yield* replies.next, "ACK TEXT 5 bytes")
      yield* connection.close
      assert.isUndefined(yield* replies.next)
      assert.strictEqual(fs.readdirSync(path.join(dir, "inbox")).length, 1)
      assert.strictEqual((yield* seen.take).name, "message.received")
      assert.strictEqual(seen.size(), 0)
    })), 60_000)

  it.live("connections past the limit are reset and counted; the service stops with the plane", () =>
    expectNoLeaks(Effect.gen(function*() {
      const dir = yield* tempDir
      const directory = newDirectory()
      const a = yield* startPlane(directory, A)
      const bScope = yield* Scope.make()
      const b = yield* startPlane(directory, B, { dataDirectory: dir, dataExchange: { maxConnections: 1 } }).pipe(Scope.provide(bScope))
      const first = yield* a.plane.transport.dial({ network: 0, node: B }, DATA_EXCHANGE_PORT)
      yield* eventually("first connection served", () => b.services.dataExchange.stats().connections === 1)
      const second = yield* a.plane.transport.dial({ network: 0, node: B }, DATA_EXCHANGE_PORT)
      const reset = yield* Effect.exit(second.read)
      assert.isTrue(Exit.isFailure(reset) || (Exit.isSuccess(reset) && reset.value === undefined))
      assert.strictEqual(b.services.dataExchange.stats().rejected, 1)
      const pending = yield* Effect.forkChild(Effect.exit(first.read))
      yield* Scope.close(bScope, Exit.void)
      const ended = yield* Fiber.join(pending)
      assert.isTrue(Exit.isFailure(ended) || (Exit.isSuccess(ended) && ended.value === undefined))
    })), 60_000)
})

/**
 * pilotctl's mailbox and pub/sub commands between two real `pilot-daemon` child processes on one registry:
 * send-message (with and without --wait), inbox (and --clear), send-file and received, subscribe (bounded and
 * NDJSON streaming) and publish. Each test checks what ended up on disk and that the commands exited cleanly.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Schedule } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { formatAddr } from "../../src/protocol/address.ts"
import { startBinary } from "../support/child-process.ts"
import { assertErrorEnvelope, ctl, okData, startCtlPair } from "./ctl-kit.ts"

const until = (what: string, condition: Effect.Effect<boolean, unknown>) =>
  condition.pipe(
    Effect.repeat({ until: (done) => done, schedule: Schedule.spaced("200 millis"), times: 100 }),
    Effect.flatMap((done) => done ? Effect.void : Effect.die(new Error(`timed out waiting for: ${what}`)))
  )

describe("pilotctl mailbox and pub/sub", () => {
  it.live("send-message --wait shows the ACK, inbox lists and clears; send-file arrives intact and received lists it", () =>
    Effect.gen(function*() {
      const { dir, a, b } = yield* startCtlPair()
      const bravo = formatAddr({ network: 0, node: b.nodeId })
      const alpha = formatAddr({ network: 0, node: a.nodeId })

      const sent = okData(yield* ctl("send-message", "bravo", "--data", "hello bravo", "--wait", "--json", "--socket", a.socket))
      assert.deepStrictEqual(sent, { target: bravo, type: "text", bytes: 11, ack: "ACK TEXT 11 bytes" })
      const quiet = okData(yield* ctl("send-message", String(b.nodeId), "--data", "{\"n\":1}", "--type", "json", "--json", "--socket", a.socket))
      assert.deepStrictEqual(quiet, { target: bravo, type: "json", bytes: 7, ack: null })
      const bad = yield* ctl("send-message", "bravo", "--data", "{nope", "--type", "json", "--json", "--socket", a.socket)
      assertErrorEnvelope(bad, "invalid_argument")

      const inboxOf = ctl("inbox", "--json", "--socket", b.socket).pipe(Effect.map(okData))
      yield* until("both messages in bravo's inbox", Effect.map(inboxOf, (data) => data["total"] === 2))
      const inbox = yield* inboxOf
      assert.strictEqual(inbox["dir"], path.join(b.home, "inbox"))
      const messages = inbox["messages"] as ReadonlyArray<Record<string, unknown>>
      assert.deepStrictEqual(messages.map((m) => [m["type"], m["from"], m["data"], m["bytes"]]).sort(), [
        ["json", alpha, "{\"n\":1}", 7],
        ["text", alpha, "hello bravo", 11]
      ])
      const cleared = okData(yield* ctl("inbox", "--clear", "--json", "--socket", b.socket))
      assert.strictEqual(cleared["cleared"], 2)
      assert.strictEqual(okData(yield* ctl("inbox", "--json", "--socket", b.socket))["total"], 0)
      assert.deepStrictEqual(fs.readdirSync(path.join(b.home, "inbox")), [])

      const file = path.join(dir, "notes.txt")
      const content = Buffer.alloc(300 * 1024, "pilotfish ")
      fs.writeFileSync(file, content)
      const sentFile = okData(yield* ctl("send-file", "bravo", file, "--json", "--socket", a.socket))
      assert.deepStrictEqual(sentFile, { filename: "notes.txt", bytes: content.byteLength, destination: bravo, ack: `ACK FILE ${content.byteLength} bytes` })
      const received = okData(yield* ctl("received", "--json", "--socket", b.socket))
      assert.strictEqual(received["total"], 1)
      const saved = (received["files"] as ReadonlyArray<Record<string, unknown>>)[0]!
      assert.match(saved["name"] as string, /^notes-\d{8}-\d{6}\.\d{3}\.txt$/)
      assert.strictEqual(saved["bytes"], content.byteLength)
      const digest = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")
      assert.strictEqual(digest(fs.readFileSync(saved["path"] as string)), digest(content))
      assert.strictEqual(okData(yield* ctl("received", "--clear", "--json", "--socket", b.socket))["cleared"], 1)
      assert.deepStrictEqual(fs.readdirSync(path.join(b.home, "received")), [])

      const missing = yield* ctl("send-file", "bravo", path.join(dir, "nope.bin"), "--json", "--socket", a.socket)
      assertErrorEnvelope(missing, "not_found")
    }), 120_000)

  it.live("subscribe --count gets what publish sends; without bounds it streams NDJSON lines", () =>
    Effect.gen(function*() {
      const { a, b } = yield* startCtlPair()
      const bravo = formatAddr({ network: 0, node: b.nodeId })

      // The subscription races the first publications: publish until the subscriber has its event.
      const subscriber = yield* Effect.forkChild(ctl("subscribe", "bravo", "news", "--count", "1", "--timeout", "60s", "--json", "--socket", a.socket))
      const publishOnce = ctl("publish", "bravo", "news", "--data", "breaking", "--json", "--socket", a.socket).pipe(Effect.map(okData))
      const published = yield* publishOnce
      assert.deepStrictEqual(published, { target: bravo, topic: "news", bytes: 8 })
      yield* until("the subscriber got an event", Effect.andThen(publishOnce, Effect.sync(() => subscriber.pollUnsafe() !== undefined)))
      const got = okData(yield* Fiber.join(subscriber))
      assert.deepStrictEqual(got, { target: bravo, topic: "news", events: [{ topic: "news", data: "breaking", bytes: 8 }], total: 1, timeout: false })

      // --timeout alone: what came before it (nothing here).
      const idle = okData(yield* ctl("subscribe", "bravo", "quiet", "--timeout", "300ms", "--json", "--socket", a.socket))
      assert.deepStrictEqual(idle, { target: bravo, topic: "quiet", events: [], total: 0, timeout: true })

      // Neither: one NDJSON line per event, on a `*` subscription, until stopped.
      const streaming = yield* startBinary("src/pilotctl/main.ts", ["subscribe", "bravo", "*", "--socket", a.socket])
      yield* until("two NDJSON lines", Effect.andThen(
        ctl("publish", "bravo", "weather", "--data", "sunny", "--json", "--socket", a.socket),
        Effect.sync(() => streaming.stdout.length >= 2)
      ))
      for (const line of streaming.stdout.slice(0, 2)) assert.deepStrictEqual(JSON.parse(line), { topic: "weather", data: "sunny", bytes: 5 })
      assert.strictEqual(yield* streaming.stop("SIGTERM"), 0) // a signal is how a streaming subscribe is meant to end
    }), 120_000)
})

/**
 * `pilot-registry` as operators run it: a child process with flags, signals, exit codes, persistence across
 * restarts, HTTP health and metrics, two processes sharing one Redis, and a storm of hostile input.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schedule } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import fc from "fast-check"
import { Identity } from "../../src/crypto/identity.ts"
import { encodeFrame } from "../../src/protocol/length-prefixed.ts"
import { setHostnameChallenge } from "../../src/protocol/registry.ts"
import { makeRegistryClient } from "../../src/registry/client.ts"
import { startBinary } from "../support/child-process.ts"
import { useRedisServer } from "../support/redis-server.ts"

const ENTRY = "src/registry/main.ts"
/** The registry's V8 heap cap in the hostile-input test. */
const HEAP_CAP_MB = 48
const SERVING = /message="pilot-registry serving" addr=127\.0\.0\.1:(\d+)/
const HTTP = /message="health and metrics served" http=127\.0\.0\.1:(\d+)/

const startRegistryBinary = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const proc = yield* startBinary(ENTRY, ["--addr", "127.0.0.1:0", ...args], env)
    const port = Number((yield* proc.waitForLine(SERVING))[1])
    const client = yield* makeRegistryClient({ host: "127.0.0.1", port, callTimeout: "5 seconds" })
    return { proc, port, client }
  })

const httpGet = (port: number, route: string) =>
  Effect.promise(async () => {
    const response = await fetch(`http://127.0.0.1:${port}${route}`)
    return { status: response.status, text: await response.text() }
  })

const register = (client: { call: (r: Record<string, unknown>) => Effect.Effect<Record<string, unknown>, unknown> }, id: Identity, hostname?: string) =>
  client.call({ type: "register", listen_addr: ":4000", public_key: id.publicKeyBase64, ...(hostname ? { hostname } : {}) })

/** Resident memory of a process, from /proc (Linux). */
const rssBytes = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024

describe("pilot-registry binary", () => {
  const redis = useRedisServer()

  it.live("serves, reports health and metrics, stops on SIGTERM with exit 0 and restores its snapshot", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pilotfish-registry-bin-"))
      const store = path.join(dir, "registry.json")
      const alice = Identity.generate()
      const first = yield* startRegistryBinary(["--store", store, "--http", "127.0.0.1:0"])
      const httpPort = Number((yield* first.proc.waitForLine(HTTP))[1])
      const id = (yield* register(first.client, alice, "alice"))["node_id"] as number
      const health = yield* httpGet(httpPort, "/health")
      assert.strictEqual(health.status, 200)
      assert.include(health.text, "\"nodes_online\":1")
      const metrics = yield* httpGet(httpPort, "/metrics")
      assert.match(metrics.text, /pilot_registry_requests_total\{type="register"\} 1/)
      assert.match(metrics.text, /pilot_registry_store_latency_seconds_bucket/)

      assert.strictEqual(yield* first.proc.stop("SIGTERM"), 0)
      assert.isTrue(first.proc.lines.some((l) => l.includes("pilot-registry stopped")))
      assert.include(fs.readFileSync(store, "utf8"), alice.publicKeyBase64)
      assert.deepStrictEqual(fs.readdirSync(dir), ["registry.json"]) // no temp file left behind

      const second = yield* startRegistryBinary(["--store", store])
      const found = yield* second.client.call({ type: "resolve_hostname", hostname: "alice" })
      assert.strictEqual(found["node_id"], id)
      assert.strictEqual(yield* second.proc.stop("SIGINT"), 0)
    }))

  it.live("two processes on one Redis serve one network", () =>
    Effect.gen(function*() {
      const url = redis.url()
      const a = yield* startRegistryBinary(["--redis", url])
      const b = yield* startRegistryBinary(["--redis", url])
      const alice = Identity.generate()
      const bob = Identity.generate()
      const aliceId = (yield* register(a.client, alice, "alice-r"))["node_id"] as number
      const seen = yield* b.client.call({ type: "lookup", node_id: aliceId })
      assert.strictEqual(seen["public_key"], alice.publicKeyBase64)
      const bobId = (yield* register(b.client, bob))["node_id"] as number
      assert.notStrictEqual(bobId, aliceId)
      const taken = yield* b.client.call({
        type: "set_hostname",
        node_id: bobId,
        hostname: "alice-r",
        signature: bob.signChallenge(setHostnameChallenge(bobId))
      }).pipe(Effect.flip)
      assert.strictEqual((taken as { code?: string }).code, "hostname_taken")
      assert.strictEqual(yield* a.proc.stop(), 0)
      assert.strictEqual(yield* b.proc.stop(), 0)
    }))

  it.live("settings come from --config, and a flag on the command line wins over the file", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pilotfish-registry-cfg-"))
      const config = path.join(dir, "registry.json")
      fs.writeFileSync(config, JSON.stringify({ addr: "127.0.0.1:0", log_format: "json", "registration-rate": 1 }))
      const fromFile = yield* startBinary(ENTRY, ["--config", config])
      const line = yield* fromFile.waitForLine(/^\{.*"message":"pilot-registry serving".*\}$/)
      const port = Number(/"addr":"127\.0\.0\.1:(\d+)"/.exec(line[0])![1])
      const client = yield* makeRegistryClient({ host: "127.0.0.1", port })
      yield* register(client, Identity.generate())
      const limited = yield* register(client, Identity.generate()).pipe(Effect.flip)
      assert.strictEqual((limited as { code?: string }).code, "rate_limited") // the file's registration-rate: 1
      assert.strictEqual(yield* fromFile.stop(), 0)

      const overridden = yield* startBinary(ENTRY, ["--config", config, "--log-format", "text"])
      yield* overridden.waitForLine(SERVING)
      assert.strictEqual(yield* overridden.stop(), 0)

      fs.writeFileSync(config, "{\"addr\": 9000")
      const broken = yield* startBinary(ENTRY, ["--config", config])
      assert.strictEqual(yield* broken.exited, 2)
      assert.isTrue(broken.lines.some((l) => l.startsWith("error: ") && l.includes("not valid JSON")))
    }))

  it.live("a bad flag exits 2 with an error and a hint; a port in use exits 3", () =>
    Effect.gen(function*() {
      const bad = yield* startBinary(ENTRY, ["--addr", "nowhere"])
      assert.strictEqual(yield* bad.exited, 2)
      assert.isTrue(bad.lines.some((l) => l.startsWith("error: ") && l.includes("nowhere")))
      assert.isTrue(bad.lines.some((l) => l.startsWith("hint: ")))
      const holder = yield* startRegistryBinary([])
      const clash = yield* startBinary(ENTRY, ["--addr", `127.0.0.1:${holder.port}`])
      assert.strictEqual(yield* clash.exited, 3)
      assert.isTrue(clash.lines.some((l) => l.includes("pilot-registry failed")))
      assert.strictEqual(yield* holder.proc.stop(), 0)
    }))

  it.live("thousands of random and mutated frames disturb nobody, and memory stays bounded", () =>
    Effect.gen(function*() {
      // Bounded memory, shown three ways: the JS heap is capped (JS state that grew with the input would kill the
      // process), every connection's state is released (the active-connections gauge returns to 0), and RSS
      // stays sane. RSS growth alone proved a noisy proxy: a busy machine lets the heap grow lazily.
      const { proc, port, client } = yield* startRegistryBinary(["--http", "127.0.0.1:0"], { NODE_OPTIONS: `--max-old-space-size=${HEAP_CAP_MB}` })
      const httpPort = Number((yield* proc.waitForLine(HTTP))[1])
      const valid = [
        JSON.stringify({ type: "register", listen_addr: ":4000", public_key: Identity.generate().publicKeyBase64 }),
        JSON.stringify({ type: "lookup", node_id: 1 }),
        JSON.stringify({ type: "set_tags", node_id: 1, tags: ["a"], signature: "AAAA" }),
        JSON.stringify({ type: "poll_handshakes", node_id: 1 })
      ]
      // Each sample is one connection's worth of bytes: garbage, truncated or bit-flipped frames, huge
      // length prefixes, invalid UTF-8 and JSON of the wrong shape.
      const hostile = fc.oneof(
        fc.uint8Array({ maxLength: 2048 }),
        fc.tuple(fc.constantFrom(...valid), fc.nat(), fc.nat(255)).map(([text, at, bits]) => {
          const frame = Result.getOrThrow(encodeFrame(Buffer.from(text)))
          frame[at % frame.length]! ^= bits || 1
          return frame
        }),
        fc.tuple(fc.constantFrom(...valid), fc.nat()).map(([text, cut]) => {
          const frame = Result.getOrThrow(encodeFrame(Buffer.from(text)))
          return frame.subarray(0, cut % frame.length)
        }),
        fc.jsonValue().map((v) => Result.getOrThrow(encodeFrame(Buffer.from(JSON.stringify(v) ?? "null")))),
        fc.constant(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]))
      )
      const storm = (seed: number) => Effect.forEach(fc.sample(hostile, { numRuns: 3000, seed }), blast, { concurrency: 32, discard: true })
      const blast = (bytes: Uint8Array) =>
        Effect.callback<void>((resume) => {
          // From another loopback address: the storm spends its own source IP's rate limit, not the client's.
          const socket = net.connect({ port, host: "127.0.0.1", localAddress: "127.0.0.2" }, () => socket.end(bytes))
          socket.on("data", () => {})
          socket.on("error", () => resume(Effect.void))
          socket.on("close", () => resume(Effect.void))
          // The registry may keep a half-sent frame open until its frame deadline; we do not wait for that.
          socket.setTimeout(200, () => socket.destroy())
          return Effect.sync(() => socket.destroy())
        })
      for (const seed of [20261124, 20261125, 20261126]) yield* storm(seed)
      const rss = rssBytes(proc.pid)
      // No per-connection state outlives its connection: once the hostile clients are gone, the registry holds
      // none of them (waits, bounded, for the server side to see the last closes).
      yield* httpGet(httpPort, "/metrics").pipe(
        Effect.repeat({ until: (m) => /pilot_registry_connections_active 0\b/.test(m.text), schedule: Schedule.spaced("100 millis") }),
        Effect.timeout("40 seconds")
      )

      const alice = Identity.generate()
      const reply = yield* register(client, alice)
      assert.strictEqual(reply["type"], "register_ok")
      const lookup = yield* client.call({ type: "lookup", node_id: reply["node_id"] as number })
      assert.strictEqual(lookup["public_key"], alice.publicKeyBase64)
      // Alive within its capped JS heap after 9000 hostile connections (the register above answered, and the
      // process exits 0 below), and its resident memory sane.
      assert.isBelow(rss, 512 * 1024 * 1024, `RSS ${rss} after the storms`)
      assert.strictEqual(yield* proc.stop(), 0)
    }), 120_000)
})

/**
 * `pilot-beacon` as operators run it: a child process with flags, answering on UDP, registering with a registry,
 * serving /health, /ready and /metrics, stopping on SIGTERM with exit 0, refusing bad flags with exit 2.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { inetAddress } from "../../src/net/udp-endpoint.ts"
import { beaconClient, eventually } from "../support/beacon.ts"
import { startBinary } from "../support/child-process.ts"
import { startRegistry } from "../support/registry.ts"

const ENTRY = "bin/pilot-beacon.ts"
const SERVING = /message="pilot-beacon serving" addr=127\.0\.0\.1:(\d+) beacon_id=(\d+)/
const HTTP = /message="health and metrics served" http=127\.0\.0\.1:(\d+)/

const httpGet = (port: number, route: string) =>
  Effect.promise(async () => {
    const response = await fetch(`http://127.0.0.1:${port}${route}`)
    return { status: response.status, text: await response.text() }
  })

describe("pilot-beacon binary", () => {
  it.live("serves Discover, registers with the registry, reports health and metrics, exits 0 on SIGTERM", () =>
    Effect.gen(function*() {
      const registry = yield* startRegistry()
      const proc = yield* startBinary(ENTRY, ["--addr", "127.0.0.1:0", "--health", "127.0.0.1:0", "--beacon-id", "77", "--registry", `127.0.0.1:${registry.port}`])
      const serving = yield* proc.waitForLine(SERVING)
      assert.strictEqual(serving[2], "77")
      const port = Number(serving[1])
      const httpPort = Number((yield* proc.waitForLine(HTTP))[1])
      yield* proc.waitForLine(/message="registered with the registry"/)
      const client = yield* registry.client()
      const listed = yield* client.call({ type: "beacon_list" })
      assert.deepStrictEqual(listed["beacons"], [{ id: 77, addr: `127.0.0.1:${port}` }])

      const node = yield* beaconClient()
      node.send({ _tag: "Discover", node: 5 }, inetAddress("127.0.0.1", port)!)
      assert.deepStrictEqual((yield* node.next()).message, { _tag: "DiscoverReply", endpoint: { ip: "127.0.0.1", port: node.address.port } })

      const health = yield* httpGet(httpPort, "/health")
      assert.strictEqual(health.status, 200)
      assert.include(health.text, "\"beacon_id\":77")
      assert.include(health.text, "\"nodes\":1")
      const ready = yield* httpGet(httpPort, "/ready")
      assert.include(ready.text, "\"registered\":true")
      const metrics = yield* httpGet(httpPort, "/metrics")
      assert.match(metrics.text, /pilot_beacon_messages_total\{type="discover"\} 1/)
      assert.match(metrics.text, /pilot_beacon_nodes 1/)
      assert.match(metrics.text, /pilot_beacon_registered 1/)

      assert.strictEqual(yield* proc.stop("SIGTERM"), 0)
      assert.isTrue(proc.lines.some((l) => l.includes("pilot-beacon stopped")))
    }))

  it.live("serves with no registry at all; settings come from --config; bad flags exit 2", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pilotfish-beacon-cfg-"))
      const config = path.join(dir, "beacon.json")
      fs.writeFileSync(config, JSON.stringify({ addr: "127.0.0.1:0", "beacon-id": 9, peers: "127.0.0.1:1" }))
      const proc = yield* startBinary(ENTRY, ["--config", config])
      const serving = yield* proc.waitForLine(SERVING)
      assert.strictEqual(serving[2], "9")
      assert.isTrue(proc.lines.some((l) => l.includes("registry=none") && l.includes("peers=127.0.0.1:1")))
      const node = yield* beaconClient()
      node.send({ _tag: "Discover", node: 0 }, inetAddress("127.0.0.1", Number(serving[1]))!)
      yield* node.next()
      yield* eventually("the static peer to be installed", () => proc.lines.some((l) => l.includes("peer beacons changed")))
      assert.strictEqual(yield* proc.stop("SIGINT"), 0)

      const bad = yield* startBinary(ENTRY, ["--peers", "nowhere"])
      assert.strictEqual(yield* bad.exited, 2)
      assert.isTrue(bad.lines.some((l) => l.startsWith("error: ") && l.includes("nowhere")))
      const badId = yield* startBinary(ENTRY, ["--beacon-id", "0"])
      assert.strictEqual(yield* badId.exited, 2)
      fs.rmSync(dir, { recursive: true })
    }))
})

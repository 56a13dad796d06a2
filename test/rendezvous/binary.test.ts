/**
 * `pilot-rendezvous` as operators run it: the registry and a beacon in one child process; the beacon registers
 * with the in-process registry, one /health, /ready and /metrics covers both, SIGTERM exits 0.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { inetAddress } from "../../src/net/udp-endpoint.ts"
import { makeRegistryClient } from "../../src/registry/client.ts"
import { beaconClient } from "../support/beacon.ts"
import { startBinary } from "../support/child-process.ts"

const ENTRY = "bin/pilot-rendezvous.ts"
const SERVING = /message="pilot-rendezvous serving" registry=127\.0\.0\.1:(\d+) beacon=127\.0\.0\.1:(\d+)/
const HTTP = /message="health and metrics served" http=127\.0\.0\.1:(\d+)/

const httpGet = (port: number, route: string) =>
  Effect.promise(async () => {
    const response = await fetch(`http://127.0.0.1:${port}${route}`)
    return { status: response.status, text: await response.text() }
  })

describe("pilot-rendezvous binary", () => {
  it.live("runs a registry and a beacon that registers with it; one health and metrics endpoint; SIGTERM exits 0", () =>
    Effect.gen(function*() {
      const proc = yield* startBinary(ENTRY, ["--registry-addr", "127.0.0.1:0", "--beacon-addr", "127.0.0.1:0", "--http", "127.0.0.1:0"])
      const serving = yield* proc.waitForLine(SERVING)
      const registryPort = Number(serving[1])
      const beaconPort = Number(serving[2])
      const httpPort = Number((yield* proc.waitForLine(HTTP))[1])
      yield* proc.waitForLine(/message="registered with the registry"/)

      const client = yield* makeRegistryClient({ host: "127.0.0.1", port: registryPort, callTimeout: "5 seconds" })
      const listed = (yield* client.call({ type: "beacon_list" }))["beacons"] as Array<{ id: number; addr: string }>
      assert.strictEqual(listed.length, 1)
      assert.strictEqual(listed[0]!.addr, `127.0.0.1:${beaconPort}`)

      const node = yield* beaconClient()
      node.send({ _tag: "Discover", node: 8 }, inetAddress("127.0.0.1", beaconPort)!)
      assert.deepStrictEqual((yield* node.next()).message, { _tag: "DiscoverReply", endpoint: { ip: "127.0.0.1", port: node.address.port } })

      const health = yield* httpGet(httpPort, "/health")
      assert.strictEqual(health.status, 200)
      assert.include(health.text, "\"nodes_online\":0")
      assert.include(health.text, `"beacon_id":${listed[0]!.id}`)
      assert.include((yield* httpGet(httpPort, "/ready")).text, "\"registered\":true")
      const metrics = yield* httpGet(httpPort, "/metrics")
      assert.match(metrics.text, /pilot_registry_requests_total\{type="beacon_register"\} [1-9]/)
      assert.match(metrics.text, /pilot_beacon_messages_total\{type="discover"\} 1/)

      assert.strictEqual(yield* proc.stop("SIGTERM"), 0)
      assert.isTrue(proc.lines.some((l) => l.includes("pilot-rendezvous stopped")))
    }))

  it.live("a beacon port in use exits 3; a bad flag exits 2", () =>
    Effect.gen(function*() {
      const holder = yield* beaconClient()
      const clash = yield* startBinary(ENTRY, ["--registry-addr", "127.0.0.1:0", "--beacon-addr", `127.0.0.1:${holder.address.port}`])
      const code = yield* clash.exited
      assert.isTrue(clash.lines.some((l) => l.includes("pilot-rendezvous failed")))
      assert.strictEqual(code, 3)
      const bad = yield* startBinary(ENTRY, ["--beacon-addr", "nowhere"])
      assert.strictEqual(yield* bad.exited, 2)
    }))
})

/**
 * Data-plane throughput on loopback: pilotfish stream MB/s and datagram packets/s between two data planes
 * (tunnel + transport, both in this process), in the same run as
 *   (a) raw node:dgram with AES-256-GCM per packet and a flow-control window — the encrypted-UDP ceiling, and
 *   (b) two js-libp2p nodes (TCP + Noise + Yamux) streaming the same bytes — a peer library.
 * Rounds rotate the order so CPU throttling (DESIGN.md §8) hits every contender alike; the table reports the
 * median of each and the median of per-round ratios. Run: `npx node bench/data-plane.ts` (≈ 1 min).
 */
import { Effect, Exit, Fiber, Queue, Scope } from "effect"
import { Identity } from "../src/crypto/identity.ts"
import { makeDataPlane, type DataPlane } from "../src/daemon/data-plane.ts"
import type * as NetAddress from "effect/net/NetAddress"
import { measureLibp2pStream } from "./support/libp2p-stream.ts"
import { measureRawUdpAead } from "./support/raw-udp-aead.ts"

const ROUNDS = 4
const STREAM_BYTES = 8 * 1024 * 1024
const DATAGRAMS = 20_000
const DATAGRAM_BYTES = 1100

const startPair = Effect.gen(function*() {
  const keys = new Map<number, Uint8Array>()
  const endpoints = new Map<number, NetAddress.InetAddress>()
  const start = (nodeId: number) =>
    Effect.gen(function*() {
      const identity = Identity.generate()
      keys.set(nodeId, identity.publicKey)
      const plane = yield* makeDataPlane({
        identity,
        nodeId,
        bind: { host: "127.0.0.1", port: 0 },
        registryKey: (node) => Effect.succeed(keys.get(node)),
        endpointOf: (node) => Effect.succeed(endpoints.get(node))
      })
      endpoints.set(nodeId, plane.tunnel.address)
      yield* Effect.forkScoped(plane.failure)
      return plane
    })
  return { a: yield* start(1), b: yield* start(2) }
})

/** One stream of STREAM_BYTES from a to b; MB/s measured at the receiver. */
const pilotfishStream = (a: DataPlane, b: DataPlane, port: number) =>
  Effect.gen(function*() {
    const listener = yield* b.transport.listen(port)
    const sink = yield* Effect.forkChild(Effect.gen(function*() {
      const connection = yield* listener.accept
      let bytes = 0
      while (true) {
        const chunk = yield* connection.read
        if (chunk === undefined) break
        bytes += chunk.byteLength
      }
      return bytes
    }))
    const connection = yield* a.transport.dial({ network: 0, node: 2 }, port)
    const start = performance.now()
    yield* connection.write(new Uint8Array(STREAM_BYTES))
    yield* connection.close
    const bytes = yield* Fiber.join(sink)
    return bytes / 1e6 / ((performance.now() - start) / 1000)
  }).pipe(Effect.scoped)

/** DATAGRAMS datagrams from a to b, paced by a window like the raw baseline; delivered packets/s. */
const pilotfishDatagrams = (a: DataPlane, b: DataPlane, port: number) =>
  Effect.gen(function*() {
    const inbox = yield* b.transport.bindDatagrams(port, 8192)
    let received = 0
    const counter = yield* Effect.forkChild(Effect.forever(Effect.andThen(Queue.take(inbox), Effect.sync(() => received++))))
    const payload = new Uint8Array(DATAGRAM_BYTES)
    const start = performance.now()
    for (let sent = 0; sent < DATAGRAMS; sent++) {
      while (sent - received > 512) yield* Effect.yieldNow
      yield* a.transport.sendDatagram({ network: 0, node: 2 }, port, payload)
    }
    for (let before = -1; received < DATAGRAMS && received !== before;) {
      before = received
      yield* Effect.sleep("100 millis")
    }
    yield* Fiber.interrupt(counter)
    return { rate: received / ((performance.now() - start) / 1000), loss: 1 - received / DATAGRAMS }
  }).pipe(Effect.scoped)

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((x, y) => x - y)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const main = async () => {
  const scope = await Effect.runPromise(Scope.make())
  const { a, b } = await Effect.runPromise(startPair.pipe(Scope.provide(scope)))
  // Warm-up: session established, JIT warm.
  await Effect.runPromise(pilotfishStream(a, b, 900))
  const results = { raw: [] as Array<number>, rawPps: [] as Array<number>, libp2p: [] as Array<number>, stream: [] as Array<number>, dgram: [] as Array<number>, dgramLoss: [] as Array<number> }
  const ratios = { streamVsRaw: [] as Array<number>, streamVsLibp2p: [] as Array<number>, dgramVsRaw: [] as Array<number> }
  // Fresh ports per round, above the built-in services (echo 7, data exchange 1001, event stream 1002).
  let port = 2000
  for (let round = 0; round < ROUNDS; round++) {
    const cells: Array<() => Promise<void>> = [
      async () => {
        const r = await measureRawUdpAead(DATAGRAMS, DATAGRAM_BYTES)
        results.raw.push(r.mbPerSecond)
        results.rawPps.push(r.packetsPerSecond)
      },
      async () => void results.libp2p.push(await measureLibp2pStream(STREAM_BYTES)),
      async () => void results.stream.push(await Effect.runPromise(pilotfishStream(a, b, ++port))),
      async () => {
        const d = await Effect.runPromise(pilotfishDatagrams(a, b, ++port))
        results.dgram.push(d.rate)
        results.dgramLoss.push(d.loss)
      }
    ]
    for (let i = 0; i < cells.length; i++) await cells[(i + round) % cells.length]!()
    ratios.streamVsRaw.push(results.stream.at(-1)! / results.raw.at(-1)!)
    ratios.streamVsLibp2p.push(results.stream.at(-1)! / results.libp2p.at(-1)!)
    ratios.dgramVsRaw.push(results.dgram.at(-1)! / results.rawPps.at(-1)!)
  }
  await Effect.runPromise(Scope.close(scope, Exit.void))
  const f = (x: number) => x.toFixed(1)
  console.log(`Command: \`npx node bench/data-plane.ts\` — Node ${process.version}, ${ROUNDS} rounds, rotating order; medians.\n`)
  console.log("| contender | measure | median | × raw dgram+AES-GCM | × libp2p |")
  console.log("|---|---|---:|---:|---:|")
  console.log(`| raw dgram + AES-256-GCM per packet (${DATAGRAM_BYTES} B, windowed) | MB/s | ${f(median(results.raw))} | 1.00 | — |`)
  console.log(`| raw dgram + AES-256-GCM per packet | packets/s | ${median(results.rawPps).toFixed(0)} | 1.00 | — |`)
  console.log(`| js-libp2p, TCP + Noise + Yamux, one stream | MB/s | ${f(median(results.libp2p))} | — | 1.00 |`)
  console.log(`| pilotfish stream (${STREAM_BYTES / 1048576} MiB, MSS 1153) | MB/s | ${f(median(results.stream))} | ${median(ratios.streamVsRaw).toFixed(2)} | ${median(ratios.streamVsLibp2p).toFixed(2)} |`)
  console.log(`| pilotfish datagrams (${DATAGRAM_BYTES} B, windowed) | packets/s | ${median(results.dgram).toFixed(0)} | ${median(ratios.dgramVsRaw).toFixed(2)} | — |`)
  console.log(`\npilotfish datagram loss: median ${(median(results.dgramLoss) * 100).toFixed(1)} %`)
}

await main()

/**
 * Time to the first delivered byte over the direct (hole-punched) and the relayed path, in network namespaces
 * with real NATs (test/support/netns.ts; needs root, iproute2 and nftables).
 *
 * For each path, two fresh daemons behind their NATs and a rendezvous on the public network. Measured from the
 * benchmark's own IPC client on h1 (no pilotctl process start in the numbers): Dial the peer's echo port,
 * send one byte, wait for it to come back.
 * - cold: the first Dial to a peer we never talked to (registry resolve, punch, key exchange, SYN, echo);
 * - warm: a new connection once the tunnel exists (SYN, echo), median of 20.
 * Baseline in the same run: a raw UDP round trip from h1 to the beacon (Discover → DiscoverReply), the
 * network's own floor.
 */
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { IpcMessage } from "../src/protocol/ipc.ts"
import { startBinary } from "../test/support/child-process.ts"
import { startDaemon } from "../test/support/daemon-child.ts"
import { connectClient } from "../test/ipc/ipc-test-kit.ts"
import { makeInternet, netnsAvailable, PUBLIC_IP } from "../test/support/netns.ts"

const REGISTRY = `${PUBLIC_IP}:9000`
const BEACON = `${PUBLIC_IP}:9001`
const WARM_RUNS = 20

const median = (xs: ReadonlyArray<number>): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const daemon = (netns: string, dir: string, name: string) =>
  Effect.gen(function*() {
    const { socket, nodeId, proc } = yield* startDaemon({ home: path.join(dir, name), registry: REGISTRY, beacon: BEACON, listen: false, args: ["--public"], netns })
    yield* proc.waitForLine(/node is public/)
    return { socket, nodeId }
  })

/** Dial → one byte → its echo, in milliseconds. */
const firstByte = (socket: string, target: number) =>
  Effect.scoped(Effect.gen(function*() {
    const ipc = yield* connectClient(socket)
    const started = performance.now()
    const dialed = yield* ipc.roundTrip({ cmd: "Dial", addr: { network: 0, node: target }, port: 7 })
    if (dialed.cmd !== "DialOK") throw new Error(`dial failed: ${JSON.stringify(dialed)}`)
    yield* ipc.request({ cmd: "Send", connId: dialed.connId, data: new Uint8Array([42]) })
    let reply: IpcMessage = yield* ipc.next
    while (reply.cmd !== "Recv") reply = yield* ipc.next
    const elapsed = performance.now() - started
    yield* ipc.request({ cmd: "Close", connId: dialed.connId })
    return elapsed
  }))

const measure = (mode: "direct" | "relay") =>
  Effect.scoped(Effect.gen(function*() {
    const net = yield* makeInternet
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pf-bench-nat-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
    const rendezvous = yield* startBinary("src/rendezvous/main.ts", ["--registry-addr", REGISTRY, "--beacon-addr", BEACON], {}, { netns: net.pub })
    yield* rendezvous.waitForLine(/pilot-rendezvous serving/)
    const a = yield* daemon(net.h1, dir, "a")
    const b = yield* daemon(net.h2, dir, "b")
    if (mode === "relay") yield* net.blockDirect
    const cold = yield* firstByte(a.socket, b.nodeId)
    const warm: Array<number> = []
    for (let i = 0; i < WARM_RUNS; i++) warm.push(yield* firstByte(a.socket, b.nodeId))
    return { cold, warm: median(warm), udp: udpRoundTrip(net.h1) }
  }))

/** Median raw UDP round trip h1 → beacon → h1 (Discover / DiscoverReply), from a plain Node script in h1. */
const udpRoundTrip = (netns: string): number => {
  const script = `
    const dgram = require("node:dgram"); const s = dgram.createSocket("udp4"); const rtts = []; let t = 0
    const ask = () => { t = performance.now(); s.send(Buffer.from([1, 0, 0, 0, 0]), 9001, "${PUBLIC_IP}") }
    s.on("message", () => { rtts.push(performance.now() - t); if (rtts.length === 50) { rtts.sort((a, b) => a - b); console.log(rtts[25]); s.close() } else ask() })
    s.bind(0, ask)`
  const run = spawnSync("ip", ["netns", "exec", netns, process.execPath, "-e", script], { encoding: "utf8", timeout: 10_000 })
  return Number(run.stdout.trim())
}

if (!netnsAvailable()) {
  console.log("skipped: needs root, iproute2 and nftables (network namespaces)")
} else {
  const rows: Array<string> = []
  for (const mode of ["direct", "relay"] as const) {
    const r = await Effect.runPromise(measure(mode))
    rows.push(`| ${mode} | ${r.cold.toFixed(0)} | ${r.warm.toFixed(2)} | ${r.udp.toFixed(3)} |`)
  }
  console.log("| path | cold: first byte to a new peer (ms) | warm: new connection, median of 20 (ms) | raw UDP round trip h1 → beacon (ms) |")
  console.log("|---|---|---|---|")
  for (const row of rows) console.log(row)
}

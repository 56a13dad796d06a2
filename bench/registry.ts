/**
 * `pilot-registry` throughput: registers/s and lookups/s with the embedded and the Redis store, at 1 and 8
 * concurrent clients, each as a ratio to a baseline measured in the same run.
 *
 *   npx node bench/registry.ts
 *
 * What runs: the real binary twice (`src/registry/main.ts`, embedded store / `--redis`), a throwaway
 * redis-server on a free port (no persistence), and a child that answers every length-prefixed frame with a
 * canned reply (`support/frame-echo-server.ts`). The load comes from this process through
 * `support/frame-load.ts`: one TCP connection per client, one request in flight per connection, every reply
 * checked to be the expected success.
 *
 * Baselines: the echo child is the ceiling of any length-prefixed request/response protocol served by Node on
 * this machine, driven by the very same client code; `redis-benchmark -P 1` (GET, SET) is what Redis itself
 * sustains for one-at-a-time requests, with a C client.
 *
 * The VM throttles its vCPUs for seconds at a time (DESIGN.md §8), so absolute numbers drift. Each round
 * measures every cell once; cells of one concurrency run back to back in a block (a rotating order per round)
 * so a cell and its baselines share the machine's state, each ratio is taken *within* a round, and the table
 * shows medians over rounds. A fixed-work CPU probe before every cell reports how much throttling the run saw,
 * and /proc accounting how much CPU each server, this client and *other* processes used (the machine is shared).
 *
 * Registrations: the registry limits new keys to 10 per source IP per minute; the binary is started with
 * `--registration-rate 1000000000` so this bench measures the request path, not the limiter. Every register
 * uses a fresh Ed25519 key, generated and signed before the timed section.
 */
import { createHash } from "node:crypto"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Result } from "effect"
import { decodeBase64 } from "../src/crypto/base64.ts"
import { Identity } from "../src/crypto/identity.ts"
import { importEd25519PublicKey, verifyChallenge } from "../src/crypto/signing.ts"
import { decodeJsonObjectBody, encodeJsonFrame, type JsonObject, LENGTH_PREFIX_BYTES } from "../src/protocol/length-prefixed.ts"
import { decodeRegistryRequest, heartbeatChallenge, registerChallenge } from "../src/protocol/registry.ts"
import { makeRegistryClient } from "../src/registry/client.ts"
import { type Child, cpuTimeMs, freePort, machineBusyMs, ownCpuMs, runToCompletion, spawnChild, stopAllChildren } from "./support/children.ts"
import { closeConnections, driveRoundTrips, type LoadResult, openConnections, opsPerSecond } from "./support/frame-load.ts"

const COMMAND = "npx node bench/registry.ts"
const ROUNDS = 5
const SLICE_MS = 800
const WARMUP_SLICE_MS = 300
const CLIENTS = [1, 8] as const
type Clients = (typeof CLIENTS)[number]
/** Nodes registered before the rounds; lookups cycle through them. */
const LOOKUP_TARGETS = 1000
const LISTEN_ADDR = "127.0.0.1:4000"
const REGISTRATION_RATE = 1_000_000_000
/** Fresh keys per register cell in the warm-up, before any rate is known. */
const WARMUP_KEYS = 1500
/** Headroom on the fastest register rate seen so far when sizing a round's key pools (throttling ends abruptly). */
const POOL_HEADROOM = 2
const MAX_POOL = 20_000
const REDIS_BENCHMARK_WARMUP_REQUESTS = 3000
/** Calls per CPU-split step: the cheap steps, and the Ed25519 ones (≈ 100× dearer; fewer keep rounds short). */
const SPLIT_ITERATIONS = 10_000
const SPLIT_ITERATIONS_ED25519 = 2_000
const repoRoot = path.resolve(import.meta.dirname, "..")

const LOOKUP_OK = new TextEncoder().encode(`{"type":"lookup_ok"`)
const REGISTER_OK = new TextEncoder().encode(`{"type":"register_ok"`)

const frameOf = (json: JsonObject): Uint8Array => Result.getOrThrow(encodeJsonFrame(json))

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

// ---------------------------------------------------------------------------------------------------------
// Requests

interface SignedRegister {
  readonly json: JsonObject
  readonly frame: Uint8Array
}

const signedRegister = (identity: Identity): SignedRegister => {
  const json = {
    type: "register",
    listen_addr: LISTEN_ADDR,
    public_key: identity.publicKeyBase64,
    signature: identity.signChallenge(registerChallenge(LISTEN_ADDR, identity.publicKeyBase64))
  }
  return { json, frame: frameOf(json) }
}

const freshRegisterFrames = (count: number): Array<Uint8Array> =>
  Array.from({ length: count }, () => signedRegister(Identity.generate()).frame)

// ---------------------------------------------------------------------------------------------------------
// Servers

interface Server {
  readonly child: Child
  readonly port: number
}

const startRegistry = async (name: string, extraArgs: ReadonlyArray<string>): Promise<Server> => {
  const child = spawnChild(name, process.execPath, [
    path.join(repoRoot, "src/registry/main.ts"),
    "--addr", "127.0.0.1:0",
    "--registration-rate", String(REGISTRATION_RATE),
    ...extraArgs
  ])
  const match = await child.waitForLine(/pilot-registry serving.*addr=127\.0\.0\.1:(\d+)/, 30_000)
  return { child, port: Number(match[1]) }
}

const startRedisServer = async (): Promise<Server> => {
  const port = await freePort()
  const child = spawnChild("redis-server", "redis-server", [
    "--port", String(port),
    "--bind", "127.0.0.1",
    "--save", "",
    "--appendonly", "no",
    "--dir", os.tmpdir(),
    "--loglevel", "notice"
  ])
  await child.waitForLine(/Ready to accept connections/, 10_000)
  return { child, port }
}

const startEchoServer = async (replyBody: string): Promise<Server> => {
  const child = spawnChild("frame-echo-server", process.execPath, [
    path.join(repoRoot, "bench/support/frame-echo-server.ts"),
    Buffer.from(replyBody, "utf8").toString("base64")
  ])
  const match = await child.waitForLine(/frame-echo-server listening port=(\d+)/, 15_000)
  return { child, port: Number(match[1]) }
}

/**
 * Registers `identities` through the project's own client (outside any timed section) and returns their node
 * IDs and one real `lookup_ok` reply, whose size the echo baseline replies with.
 */
const populate = (port: number, identities: ReadonlyArray<Identity>) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const client = yield* makeRegistryClient({ host: "127.0.0.1", port, callTimeout: "10 seconds" })
    const nodeIds: Array<number> = []
    for (const identity of identities) {
      const reply = yield* client.call(signedRegister(identity).json)
      const nodeId = reply["node_id"]
      if (typeof nodeId !== "number") return yield* Effect.die(new Error(`register_ok without node_id: ${JSON.stringify(reply)}`))
      nodeIds.push(nodeId)
    }
    const sample = yield* client.call({ type: "lookup", node_id: nodeIds[0]! })
    return { nodeIds, lookupReply: JSON.stringify(sample) }
  })))

// ---------------------------------------------------------------------------------------------------------
// Measurements

interface Sample {
  readonly opsPerSecond: number
  /** CPU time of the server process per request (µs), from /proc: what one request really costs it. */
  readonly serverCpuUs: number
  /** Server CPU time / wall time over the sample: near 1 means the server process was the bottleneck. */
  readonly serverBusy: number
  /** redis-server's CPU per request (µs), for cells that use it. */
  readonly redisCpuUs?: number
  /** This process's (the load generator's) CPU per request (µs). */
  readonly clientCpuUs?: number
  /** CPU used meanwhile by processes that are not part of the bench, in cores (1 = one core fully busy). */
  readonly foreignCores?: number
}

/** One sample per cell name, for one round. */
type RoundResults = Map<string, Sample>

const cellName = (kind: string, clients: Clients) => `${kind}/${clients}`

/** Milliseconds for a fixed amount of hashing: a thermometer for throttling, not a result. */
const cpuProbe = (() => {
  const data = Buffer.alloc(256 * 1024, 7)
  return () => {
    const start = performance.now()
    for (let i = 0; i < 4; i++) createHash("sha256").update(data).digest()
    return performance.now() - start
  }
})()

interface Load {
  readonly server: Server
  readonly clients: Clients
  readonly nextFrame: () => Uint8Array | undefined
  readonly expected: Uint8Array
  readonly sliceMs: number
  /** A second process doing work for each request (redis-server behind a registry). */
  readonly backend?: Server
}

const roundTrips = async (load: Load): Promise<{ readonly result: LoadResult; readonly sample: Sample }> => {
  const sockets = await openConnections(load.server.port, load.clients)
  try {
    const machineBefore = machineBusyMs()
    const ownBefore = ownCpuMs()
    const clientBefore = process.cpuUsage()
    const cpuBefore = cpuTimeMs(load.server.child)
    const backendBefore = load.backend === undefined ? 0 : cpuTimeMs(load.backend.child)
    const result = await driveRoundTrips(sockets, { nextFrame: load.nextFrame, expectedReplyPrefix: load.expected, durationMs: load.sliceMs })
    const cpuMs = cpuTimeMs(load.server.child) - cpuBefore
    const backendMs = load.backend === undefined ? 0 : cpuTimeMs(load.backend.child) - backendBefore
    const client = process.cpuUsage(clientBefore)
    const foreignMs = machineBusyMs() - machineBefore - (ownCpuMs() - ownBefore)
    const sample: Sample = {
      opsPerSecond: opsPerSecond(result),
      serverCpuUs: (cpuMs * 1000) / result.ops,
      serverBusy: cpuMs / result.elapsedMs,
      clientCpuUs: (client.user + client.system) / result.ops,
      foreignCores: Math.max(0, foreignMs / result.elapsedMs),
      ...(load.backend === undefined ? {} : { redisCpuUs: (backendMs * 1000) / result.ops })
    }
    return { result, sample }
  } finally {
    await closeConnections(sockets)
  }
}

const cycling = (frames: ReadonlyArray<Uint8Array>) => {
  let i = 0
  return () => frames[i++ % frames.length]
}

const draining = (frames: ReadonlyArray<Uint8Array>) => {
  let i = 0
  return () => frames[i++]
}

const parseRedisBenchmarkCsv = (csv: string): { readonly SET: number; readonly GET: number } => {
  const rps = new Map<string, number>()
  for (const line of csv.split("\n")) {
    const [test, value] = line.split(",").map((cell) => cell.replaceAll("\"", "").trim())
    if (test !== undefined && value !== undefined && Number.isFinite(Number(value))) rps.set(test, Number(value))
  }
  const set = rps.get("SET")
  const get = rps.get("GET")
  if (set === undefined || get === undefined) throw new Error(`unexpected redis-benchmark output:\n${csv}`)
  return { SET: set, GET: get }
}

const redisBenchmark = async (port: number, clients: Clients, requests: number) =>
  parseRedisBenchmarkCsv(await runToCompletion(`redis-benchmark -c ${clients}`, "redis-benchmark", [
    "-h", "127.0.0.1", "-p", String(port),
    "-t", "get,set", "-c", String(clients), "-n", String(requests), "-P", "1", "--csv"
  ], 60_000))

/** µs per call of each step a registry request goes through, timed in this process. */
interface CpuSplit {
  readonly parse: number
  readonly decodeLookup: number
  readonly decodeRegister: number
  readonly encodeReply: number
  readonly verifyCached: number
  readonly importAndVerify: number
}

const SPLIT_LABELS: Record<keyof CpuSplit, string> = {
  parse: "UTF-8 + JSON.parse of a request body (`decodeJsonObjectBody`)",
  decodeLookup: "Schema decode of a `lookup` (`decodeRegistryRequest`)",
  decodeRegister: "Schema decode of a signed `register` (`decodeRegistryRequest`)",
  encodeReply: "reply encode: JSON.stringify + UTF-8 + frame of a `lookup_ok` (`encodeJsonFrame`)",
  verifyCached: "Ed25519 verify, key object cached (signed requests of a known node: `verifyChallenge`)",
  importAndVerify: "base64 + key import + Ed25519 verify (register with a fresh key)"
}

const makeCpuSplit = (lookupBody: Uint8Array, lookupReply: JsonObject) => {
  const identity = Identity.generate()
  const register = signedRegister(identity).json
  const publicKey = String(register["public_key"])
  const registerSignature = String(register["signature"])
  const registerText = registerChallenge(LISTEN_ADDR, publicKey)
  const cachedKey = importEd25519PublicKey(identity.publicKey)!
  const heartbeat = heartbeatChallenge(42)
  const heartbeatSignature = identity.signChallenge(heartbeat)
  const lookupJson = Result.getOrThrow(decodeJsonObjectBody(lookupBody))

  /** µs per call; every call must succeed, or the step is not doing the work it is named after. */
  const time = (step: () => boolean, iterations = SPLIT_ITERATIONS) => {
    let ok = 0
    const start = performance.now()
    for (let i = 0; i < iterations; i++) if (step()) ok++
    const micros = ((performance.now() - start) * 1000) / iterations
    if (ok !== iterations) throw new Error(`CPU split: a step failed ${iterations - ok} times`)
    return micros
  }
  return (): CpuSplit => ({
    parse: time(() => Result.isSuccess(decodeJsonObjectBody(lookupBody))),
    decodeLookup: time(() => Result.isSuccess(decodeRegistryRequest(lookupJson))),
    decodeRegister: time(() => Result.isSuccess(decodeRegistryRequest(register))),
    encodeReply: time(() => Result.isSuccess(encodeJsonFrame(lookupReply))),
    verifyCached: time(() => verifyChallenge(cachedKey, heartbeat, heartbeatSignature), SPLIT_ITERATIONS_ED25519),
    importAndVerify: time(() => {
      const raw = decodeBase64(publicKey)
      const key = raw === undefined ? undefined : importEd25519PublicKey(raw)
      return key !== undefined && verifyChallenge(key, registerText, registerSignature)
    }, SPLIT_ITERATIONS_ED25519)
  })
}

// ---------------------------------------------------------------------------------------------------------

interface Unit {
  readonly run: (results: RoundResults, sliceMs: number) => Promise<void>
}

const main = async () => {
  const startedAt = performance.now()
  const redis = await startRedisServer()
  const [embedded, redisRegistry] = await Promise.all([
    startRegistry("pilot-registry (embedded)", []),
    startRegistry("pilot-registry (redis)", ["--redis", `redis://127.0.0.1:${redis.port}`])
  ])
  const targets = Array.from({ length: LOOKUP_TARGETS }, () => Identity.generate())
  const [embeddedNodes, redisNodes] = await Promise.all([populate(embedded.port, targets), populate(redisRegistry.port, targets)])
  const echo = await startEchoServer(embeddedNodes.lookupReply)
  const lookupFrames = (nodeIds: ReadonlyArray<number>) => nodeIds.map((nodeId) => frameOf({ type: "lookup", node_id: nodeId }))
  const embeddedLookups = lookupFrames(embeddedNodes.nodeIds)
  const echoReplyPrefix = new TextEncoder().encode(embeddedNodes.lookupReply).subarray(0, LOOKUP_OK.byteLength)
  const cpuSplit = makeCpuSplit(embeddedLookups[0]!.subarray(LENGTH_PREFIX_BYTES), JSON.parse(embeddedNodes.lookupReply) as JsonObject)

  const registries = [
    { kind: "embedded", server: embedded, lookups: embeddedLookups, backend: undefined },
    { kind: "redis", server: redisRegistry, lookups: lookupFrames(redisNodes.nodeIds), backend: redis }
  ] as const
  // Register key pools for the coming round, and the fastest register rate seen per cell (to size them).
  const pools = new Map<string, Array<Uint8Array>>()
  const fastestRegisters = new Map<string, number>()
  const exhaustedCells = new Set<string>()
  const probes: Array<number> = []
  const splits: Array<CpuSplit> = []
  let redisBenchmarkRequests = REDIS_BENCHMARK_WARMUP_REQUESTS

  const blocks = CLIENTS.map((clients): Array<Unit> => [
    {
      run: async (results, sliceMs) => {
        const load = { server: echo, clients, nextFrame: cycling(embeddedLookups), expected: echoReplyPrefix, sliceMs }
        results.set(cellName("echo", clients), (await roundTrips(load)).sample)
      }
    },
    {
      run: async (results) => {
        const requests = redisBenchmarkRequests
        const cpuBefore = cpuTimeMs(redis.child)
        const rps = await redisBenchmark(redis.port, clients, requests)
        // One invocation runs SET then GET: redis-server's CPU is known for the pair only.
        const cpuUs = ((cpuTimeMs(redis.child) - cpuBefore) * 1000) / (2 * requests)
        const sample = (ops: number): Sample => ({ opsPerSecond: ops, serverCpuUs: cpuUs, serverBusy: (cpuUs * ops) / 1e6 })
        results.set(cellName("redis-benchmark-set", clients), sample(rps.SET))
        results.set(cellName("redis-benchmark-get", clients), sample(rps.GET))
      }
    },
    ...registries.flatMap(({ kind, server, lookups, backend }): Array<Unit> => {
      const base = { server, clients, ...(backend === undefined ? {} : { backend }) }
      return [
        {
          run: async (results, sliceMs) => {
            const load = { ...base, nextFrame: cycling(lookups), expected: LOOKUP_OK, sliceMs }
            results.set(cellName(`${kind}-lookup`, clients), (await roundTrips(load)).sample)
          }
        },
        {
          run: async (results, sliceMs) => {
            const name = cellName(`${kind}-register`, clients)
            const { result, sample } = await roundTrips({ ...base, nextFrame: draining(pools.get(name) ?? []), expected: REGISTER_OK, sliceMs })
            if (result.exhausted) exhaustedCells.add(name)
            results.set(name, sample)
          }
        }
      ]
    })
  ])
  const registerCells = registries.flatMap(({ kind }) => CLIENTS.map((clients) => cellName(`${kind}-register`, clients)))

  const runRound = async (round: number, sliceMs: number): Promise<RoundResults> => {
    for (const name of registerCells) {
      const fastest = fastestRegisters.get(name)
      const size = fastest === undefined ? WARMUP_KEYS : Math.min(MAX_POOL, Math.ceil((fastest * sliceMs * POOL_HEADROOM) / 1000) + 100)
      pools.set(name, freshRegisterFrames(size))
    }
    const results: RoundResults = new Map()
    // Blocks alternate which client count goes first; inside a block the order rotates by one cell per round.
    for (const block of round % 2 === 0 ? blocks : [...blocks].reverse()) {
      for (let k = 0; k < block.length; k++) {
        probes.push(cpuProbe())
        await block[(k + round) % block.length]!.run(results, sliceMs)
      }
    }
    splits.push(cpuSplit())
    for (const name of registerCells) {
      fastestRegisters.set(name, Math.max(fastestRegisters.get(name) ?? 0, results.get(name)?.opsPerSecond ?? 0))
    }
    return results
  }

  // Warm-up: JIT on every side, Redis scripts loaded, and the rates that size the key pools and redis-benchmark's -n.
  const warmup = await runRound(0, WARMUP_SLICE_MS)
  exhaustedCells.clear()
  probes.length = 0
  splits.length = 0
  const fastestGet = Math.max(...CLIENTS.map((c) => warmup.get(cellName("redis-benchmark-get", c))?.opsPerSecond ?? 0))
  redisBenchmarkRequests = Math.max(REDIS_BENCHMARK_WARMUP_REQUESTS, Math.round((fastestGet * SLICE_MS) / 1000))
  const rounds: Array<RoundResults> = []
  for (let round = 0; round < ROUNDS; round++) rounds.push(await runRound(round, SLICE_MS))

  console.log(report({ rounds, splits, probes, exhausted: exhaustedCells, redisBenchmarkRequests, elapsedS: (performance.now() - startedAt) / 1000 }))
}

// ---------------------------------------------------------------------------------------------------------
// Report

interface Measured {
  readonly rounds: ReadonlyArray<RoundResults>
  readonly splits: ReadonlyArray<CpuSplit>
  readonly probes: ReadonlyArray<number>
  readonly exhausted: ReadonlySet<string>
  readonly redisBenchmarkRequests: number
  readonly elapsedS: number
}

const fmtRate = (x: number) => Math.round(x).toLocaleString("en-US")
const fmtRatio = (x: number) => x.toFixed(2)
const fmtPct = (part: number, whole: number) => `${Math.round((100 * part) / whole)} %`

const report = (m: Measured): string => {
  const samples = (name: string) =>
    m.rounds.map((round) => {
      const sample = round.get(name)
      if (sample === undefined) throw new Error(`no sample for ${name}`)
      return sample
    })
  const med = (name: string, field: (s: Sample) => number) => median(samples(name).map(field))
  const rate = (name: string) => med(name, (s) => s.opsPerSecond)
  const ratio = (name: string, baseline: string) =>
    median(m.rounds.map((round) => round.get(name)!.opsPerSecond / round.get(baseline)!.opsPerSecond))

  const rows: Array<string> = []
  for (const clients of CLIENTS) {
    const row = (server: string, operation: string, kind: string, echoRatio: boolean, redisBaseline?: string) => {
      const name = cellName(kind, clients)
      const rates = samples(name).map((s) => s.opsPerSecond)
      const mark = m.exhausted.has(name) ? " ¹" : ""
      const redisCpu = samples(name)[0]!.redisCpuUs === undefined ? "" : ` + ${med(name, (s) => s.redisCpuUs!).toFixed(0)} redis`
      const cpu = `${med(name, (s) => s.serverCpuUs).toFixed(1)}${redisCpu}`
      const busy = kind.startsWith("redis-benchmark") ? "—" : `${Math.round(100 * med(name, (s) => s.serverBusy))} %`
      const clientCpu = samples(name)[0]!.clientCpuUs === undefined ? "—" : med(name, (s) => s.clientCpuUs!).toFixed(1)
      const echoCol = echoRatio ? fmtRatio(ratio(name, cellName("echo", clients))) : "—"
      const redisCol = redisBaseline === undefined ? "—" : fmtRatio(ratio(name, cellName(redisBaseline, clients)))
      rows.push(
        `| ${server} | ${operation}${mark} | ${clients} | ${fmtRate(median(rates))} | ${fmtRate(Math.min(...rates))}–${fmtRate(Math.max(...rates))} | ` +
          `${cpu} | ${busy} | ${clientCpu} | ${echoCol} | ${redisCol} |`
      )
    }
    row("TCP frame echo, Node (baseline)", "round trip", "echo", true)
    row("redis-benchmark -P 1 (baseline)", "GET", "redis-benchmark-get", false, "redis-benchmark-get")
    row("redis-benchmark -P 1 (baseline)", "SET", "redis-benchmark-set", false, "redis-benchmark-set")
    row("pilot-registry, embedded store", "lookup", "embedded-lookup", true)
    row("pilot-registry, embedded store", "register", "embedded-register", true)
    row("pilot-registry, Redis store", "lookup", "redis-lookup", true, "redis-benchmark-get")
    row("pilot-registry, Redis store", "register", "redis-register", true, "redis-benchmark-set")
  }

  const splitKeys = Object.keys(SPLIT_LABELS) as Array<keyof CpuSplit>
  const split = Object.fromEntries(splitKeys.map((key) => [key, median(m.splits.map((s) => s[key]))])) as Record<keyof CpuSplit, number>
  const splitRows = splitKeys.map((key) => `| ${SPLIT_LABELS[key]} | ${split[key].toFixed(2)} |`)

  const us = (ops: number) => 1e6 / ops
  const pctOfCore = (fraction: number) => `${Math.round(100 * fraction)} %`
  const lookupSteps = split.parse + split.decodeLookup + split.encodeReply
  const lookupCpu = med("embedded-lookup/8", (s) => s.serverCpuUs)
  const registerCpu = med("embedded-register/8", (s) => s.serverCpuUs)
  const echoCpu = med("echo/8", (s) => s.serverCpuUs)
  const clientShare = med("embedded-lookup/8", (s) => (s.clientCpuUs! * s.opsPerSecond) / 1e6)
  const foreign = m.rounds.flatMap((round) => [...round.values()].flatMap((s) => (s.foreignCores === undefined ? [] : [s.foreignCores])))
  const fastestProbe = Math.min(...m.probes)
  const slowestProbe = Math.max(...m.probes)

  const reading = [
    `**What limits us.** With 1 client every request is a full loopback round trip, so ops/s is 1/latency: an embedded`,
    `lookup takes ${us(rate("embedded-lookup/1")).toFixed(0)} µs against ${us(rate("echo/1")).toFixed(0)} µs for the bare framed round trip. Per request, the registry process`,
    `spends ${lookupCpu.toFixed(0)} µs of CPU on a lookup (8 clients), the echo server ${echoCpu.toFixed(0)} µs on a round trip. Of those ${lookupCpu.toFixed(0)} µs, the`,
    `steps timed in-process — JSON parse ${split.parse.toFixed(1)} + Schema decode ${split.decodeLookup.toFixed(1)} + reply encode ${split.encodeReply.toFixed(1)} µs — are`,
    `${fmtPct(lookupSteps, lookupCpu)}, socket I/O and framing (≈ the echo server's cost) ${fmtPct(echoCpu, lookupCpu)}; the remaining ≈ ${(lookupCpu - lookupSteps - echoCpu).toFixed(0)} µs is per-request`,
    `machinery outside those steps (Effect socket reader/writer, fiber and Effect.gen steps, metrics, the store's latency`,
    `instrumentation). At 8 clients the registry process is busy ${pctOfCore(med("embedded-lookup/8", (s) => s.serverBusy))} of a core, this client process`,
    `${pctOfCore(clientShare)}, other processes on the machine ${pctOfCore(median(foreign))} (median over all cells), out of 200 % for 2 vCPUs. A register`,
    `costs ${registerCpu.toFixed(0)} µs of registry CPU; base64 + key import + Ed25519 verify of the fresh key is ${split.importAndVerify.toFixed(0)} µs of it`,
    `(${fmtPct(split.importAndVerify, registerCpu)}), Schema decode of the signed request ${split.decodeRegister.toFixed(1)} µs; the store write and a larger reply make up`,
    `part of the rest. The Redis store adds a loopback round trip to redis-server per lookup (one EVALSHA; HGET +`,
    `EVALSHA per register), the Redis client's work on the registry's event loop (a lookup costs the registry`,
    `${med("redis-lookup/8", (s) => s.serverCpuUs).toFixed(0)} µs instead of ${lookupCpu.toFixed(0)} µs, plus ${med("redis-lookup/8", (s) => s.redisCpuUs!).toFixed(0)} µs in redis-server), and redis-server competes for the same vCPUs:`,
    `Redis-store lookups run at ${fmtRatio(ratio("redis-lookup/1", "embedded-lookup/1"))}× (1 client) and ${fmtRatio(ratio("redis-lookup/8", "embedded-lookup/8"))}× (8 clients) the embedded rate.`
  ].join("\n")

  return [
    `## pilot-registry throughput`,
    "",
    `Command: \`${COMMAND}\` — Node ${process.version}, ${os.cpus().length} vCPUs, ${ROUNDS} rounds (after a warm-up) of`,
    `${SLICE_MS} ms per cell; redis-benchmark with \`-n ${m.redisBenchmarkRequests} -P 1\` (sized from the warm-up). Medians over`,
    `rounds; "× echo" / "× redis-benchmark" are medians of per-round ratios to the baseline with the same client`,
    `count (Redis-store rows: lookup vs GET, register vs SET). "server CPU" is the server process's user + system`,
    `time per request (/proc; redis-benchmark rows: redis-server over its SET + GET run), "server busy" that time over`,
    `wall time, "client CPU" this load generator's time per request. Each register uses a fresh Ed25519 key; the`,
    `registry runs with \`--registration-rate ${REGISTRATION_RATE}\` so the per-IP limit (default 10/min) is out of the way.`,
    "",
    "| server | operation | clients | ops/s | range over rounds | server CPU µs/op | server busy | client CPU µs/op | × echo | × redis-benchmark |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...rows,
    ...(m.exhausted.size > 0 ? ["", "¹ the pre-generated key pool ran out before the slice ended in some round (that sample is shorter)."] : []),
    "",
    `CPU split (this process, ${SPLIT_ITERATIONS.toLocaleString("en-US")} calls per step, ${SPLIT_ITERATIONS_ED25519.toLocaleString("en-US")} for the Ed25519 steps, median over rounds):`,
    "",
    "| step | µs/call |",
    "|---|---:|",
    ...splitRows,
    "",
    `Machine state: a fixed hashing workload before each cell took ${fastestProbe.toFixed(1)}–${slowestProbe.toFixed(1)} ms (${(slowestProbe / fastestProbe).toFixed(1)}× spread:`,
    `throttling); processes outside the bench used a median ${pctOfCore(median(foreign))} (max ${pctOfCore(Math.max(...foreign))}) of a core during the cells.`,
    `Total wall time ${m.elapsedS.toFixed(1)} s.`,
    "",
    reading
  ].join("\n")
}

try {
  await main()
} finally {
  await stopAllChildren()
}

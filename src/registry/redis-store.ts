/**
 * The Redis registry store: several `pilot-registry` processes pointed at one Redis serve one network
 * (DESIGN.md §6). Every read-then-write runs as a Lua script (`redis-scripts.ts`), so processes never
 * interleave inside an operation; expiry follows the callers' `nowMs` exactly as the embedded store does.
 *
 * Key layout, under a configurable prefix (default `pilotfish:`):
 *   next-node        string  last node ID handed out (INCR; never reaches 0xFFFFFFFF, the broadcast address)
 *   node-of-key      hash    public key (base64) → node ID
 *   key-of-node      hash    node ID → public key; permanent, its size is the number of bindings (capped)
 *   lease:<id>       hash    the live part of a node: publicKey, realAddr, hostname?, tags (JSON array),
 *                            public and relayOnly ("0"/"1"), owner?, version?, lastSeenMs (caller's clock)
 *   host:<name>      string  node ID holding the hostname (valid only while that node's lease is live and names it)
 *   online           zset    node ID scored by lastSeenMs, for `nodes_online`
 *   trust-reports    set     one-direction trust reports as "from>to" (a pair is both directions)
 *   inbox:<id>       list    relayed handshake items (JSON), at most INBOX_CAPACITY
 *   beacon-seen      zset    beacon ID scored by its last registration (caller's clock)
 *   beacon-addr      hash    beacon ID → address
 * `lease:*` and `host:*` also carry a real Redis TTL an hour past the logical expiry, as garbage collection
 * for nodes that vanish; the logical rule alone decides liveness.
 *
 * Every call is bounded by a timeout and fails fast while the connection is down (no offline queue), so a
 * stuck or absent Redis yields `StoreError` instead of wedging requests. Closing the layer closes the client,
 * forcibly if Redis does not answer within the timeout.
 */
import * as NodeRedis from "@effect/platform-node/NodeRedis"
import { Context, Duration, Effect, Layer, Schema, SchemaTransformation } from "effect"
import { Redis } from "effect/persistence"
import { defaultMemoryLimits, type MemoryLimits, splitInbox } from "./memory-state.ts"
import * as scripts from "./redis-scripts.ts"
import {
  type InboxItem,
  MAX_NODE_ID,
  type NodeLease,
  type RegisterOutcome,
  RegistryStore,
  type RegistryStoreShape,
  StoredInboxItem,
  StoredNodeId,
  StoreError,
  trustReportKey
} from "./store.ts"

export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). */
  readonly url: string
  /** Namespace of every key, so several networks (or test runs) can share one Redis. */
  readonly keyPrefix?: string
  /** The same caps as the embedded store. */
  readonly limits?: MemoryLimits
  /** Bound on every call and on connecting (default 2000 ms). */
  readonly timeoutMs?: number
}

export const DEFAULT_KEY_PREFIX = "pilotfish:"
const DEFAULT_TIMEOUT_MS = 2000
/** Commands allowed to wait for replies at once; past it a call fails instead of growing the client's queue. */
const MAX_QUEUED_COMMANDS = 10_000

const NodeId = StoredNodeId
const NodeIdFromString = Schema.FiniteFromString.pipe(Schema.decodeTo(NodeId))
const Flag = Schema.Literals(["0", "1"]).pipe(
  Schema.decodeTo(Schema.Boolean, SchemaTransformation.transform({ decode: (bit) => bit === "1", encode: (b) => (b ? "1" : "0") }))
)
const Tags = Schema.fromJsonString(Schema.Array(Schema.String))
const LeaseFields = Schema.Struct({
  publicKey: Schema.String,
  realAddr: Schema.String,
  hostname: Schema.optionalKey(Schema.String),
  tags: Tags,
  public: Flag,
  relayOnly: Flag,
  owner: Schema.optionalKey(Schema.String),
  version: Schema.optionalKey(Schema.String),
  lastSeenMs: Schema.FiniteFromString
})
const FieldList = Schema.Array(Schema.String)
const RegisterReply = Schema.Union([
  Schema.Tuple([Schema.Literal("full")]),
  Schema.Tuple([Schema.Literal("registered"), NodeId, Schema.BooleanFromBit, Schema.BooleanFromBit, FieldList])
])
const InboxItemJson = Schema.fromJsonString(StoredInboxItem)
const BeaconList = Schema.Array(Schema.Tuple([NodeId, Schema.String]))
const UpdateReply = Schema.Literals(["ok", "not_found"])
const CapReply = Schema.Literals(["ok", "full"])

const encodeFlag = Schema.encodeSync(Flag)
const encodeTags = Schema.encodeSync(Tags)
const encodeInboxItem = Schema.encodeSync(InboxItemJson)

type Decode<A> = (reply: unknown) => Effect.Effect<A, Schema.SchemaError>
const as = <A>(schema: Schema.Decoder<A>): Decode<A> => Schema.decodeUnknownEffect(schema)

const pairsToRecord = (flat: ReadonlyArray<string>): Record<string, string> => {
  const record: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) record[flat[i] as string] = flat[i + 1] as string
  return record
}

const leaseFrom = (nodeId: number, fields: ReadonlyArray<string>): Effect.Effect<NodeLease, Schema.SchemaError> =>
  Schema.decodeUnknownEffect(LeaseFields)(pairsToRecord(fields)).pipe(Effect.map((lease) => ({ nodeId, ...lease })))

const registerOutcome = (
  reply: typeof RegisterReply.Type
): Effect.Effect<RegisterOutcome, Schema.SchemaError> =>
  reply[0] === "full"
    ? Effect.succeed({ _tag: "Full" })
    : leaseFrom(reply[1], reply[4]).pipe(
      Effect.map((lease) => ({ _tag: "Registered", lease, reclaimed: reply[2], hostnameTaken: reply[3] }))
    )

const describeCause = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

const makeStore = (redis: Redis.Redis["Service"], prefix: string, limits: MemoryLimits, timeoutMs: number): RegistryStoreShape => {
  const timeout = Duration.millis(timeoutMs)
  const call = <A>(operation: string, request: Effect.Effect<unknown, Redis.RedisError>, decode: Decode<A>) =>
    request.pipe(
      Effect.mapError((error) => new StoreError({ operation, detail: describeCause(error.cause) })),
      Effect.flatMap((reply) =>
        decode(reply).pipe(Effect.mapError((error) => new StoreError({ operation, detail: `unexpected reply: ${error.message}` })))
      ),
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () => Effect.fail(new StoreError({ operation, detail: `no reply from Redis within ${timeoutMs} ms` }))
      })
    )
  const run = <P extends ReadonlyArray<string | number>>(script: Redis.Script<{ params: [string, ...P]; result: unknown }>) =>
  (...params: P) => redis.eval(script)(prefix, ...params)
  const id = String
  const trustReports = prefix + scripts.keys.trustReports
  const ms = String

  return RegistryStore.of({
    register: (input) =>
      call(
        "register",
        run(scripts.register)(
          ms(input.nowMs),
          input.publicKey,
          input.realAddr,
          encodeFlag(input.relayOnly),
          ...scripts.optionalArg(input.hostname),
          ...scripts.optionalArg(input.owner),
          ...scripts.optionalArg(input.version),
          limits.maxNodes,
          MAX_NODE_ID
        ),
        (reply) => as(RegisterReply)(reply).pipe(Effect.flatMap(registerOutcome))
      ),
    heartbeat: (nodeId, nowMs) => call("heartbeat", run(scripts.heartbeat)(ms(nowMs), id(nodeId)), as(Schema.BooleanFromBit)),
    lease: (nodeId, nowMs) =>
      call("lease", run(scripts.lease)(ms(nowMs), id(nodeId)), (reply) =>
        as(FieldList)(reply).pipe(
          Effect.flatMap((fields) => (fields.length === 0 ? Effect.succeed(undefined) : leaseFrom(nodeId, fields)))
        )),
    nodeIdOfKey: (publicKey) =>
      call("node of key", redis.send("HGET", prefix + scripts.keys.nodeOfKey, publicKey), (reply) =>
        as(Schema.NullOr(NodeIdFromString))(reply).pipe(Effect.map((nodeId) => nodeId ?? undefined))),
    boundKey: (nodeId) =>
      call("bound key", redis.send("HGET", prefix + scripts.keys.keyOfNode, id(nodeId)), (reply) =>
        as(Schema.NullOr(Schema.String))(reply).pipe(Effect.map((key) => key ?? undefined))),
    resolveHostname: (hostname, nowMs) =>
      call("resolve hostname", run(scripts.resolveHostname)(ms(nowMs), hostname), (reply) =>
        as(Schema.NullOr(NodeId))(reply).pipe(Effect.map((nodeId) => nodeId ?? undefined))),
    setHostname: (nodeId, hostname, nowMs) =>
      call(
        "set hostname",
        run(scripts.setHostname)(ms(nowMs), id(nodeId), hostname),
        as(Schema.Literals(["ok", "not_found", "taken"]))
      ),
    setVisibility: (nodeId, isPublic, nowMs) =>
      call("set visibility", run(scripts.setLeaseField)(ms(nowMs), id(nodeId), "public", encodeFlag(isPublic)), as(UpdateReply)),
    setTags: (nodeId, tags, nowMs) =>
      call("set tags", run(scripts.setLeaseField)(ms(nowMs), id(nodeId), "tags", encodeTags(tags)), as(UpdateReply)),
    deregister: (nodeId) => call("deregister", run(scripts.deregister)(id(nodeId)), as(UpdateReply)),
    rotateKey: (nodeId, newPublicKey) =>
      call(
        "rotate key",
        run(scripts.rotateKey)(id(nodeId), newPublicKey),
        as(Schema.Literals(["ok", "not_found", "key_in_use"]))
      ),
    reportTrust: (from, to) =>
      call("report trust", run(scripts.reportTrust)(trustReportKey(from, to), limits.maxTrustReports), as(CapReply)),
    revokeTrust: (a, b) =>
      call("revoke trust", redis.send("SREM", trustReports, trustReportKey(a, b), trustReportKey(b, a)), () => Effect.void),
    hasTrust: (a, b) =>
      call("has trust", redis.send("SMISMEMBER", trustReports, trustReportKey(a, b), trustReportKey(b, a)), (reply) =>
        as(Schema.Tuple([Schema.BooleanFromBit, Schema.BooleanFromBit]))(reply).pipe(Effect.map(([ab, ba]) => ab && ba))),
    pushInbox: (nodeId, item: InboxItem) =>
      call("push inbox", run(scripts.pushInbox)(id(nodeId), encodeInboxItem(item)), as(CapReply)),
    drainInbox: (nodeId) =>
      call("drain inbox", run(scripts.drainInbox)(id(nodeId)), (reply) =>
        as(Schema.Array(InboxItemJson))(reply).pipe(Effect.map(splitInbox))),
    registerBeacon: (beacon, nowMs) =>
      call(
        "register beacon",
        run(scripts.registerBeacon)(ms(nowMs), id(beacon.beaconId), beacon.addr, limits.maxBeacons),
        as(CapReply)
      ),
    listBeacons: (nowMs) =>
      call("list beacons", run(scripts.listBeacons)(ms(nowMs)), (reply) =>
        as(BeaconList)(reply).pipe(Effect.map((beacons) => beacons.map(([beaconId, addr]) => ({ beaconId, addr }))))),
    nodesOnline: (nowMs) => call("nodes online", run(scripts.nodesOnline)(ms(nowMs)), as(NodeId))
  })
}

/**
 * Closes the client gracefully (pending replies delivered), or destroys it when Redis does not answer in time:
 * a stuck Redis must not hang the registry's shutdown.
 */
const closeClient = (nodeRedis: NodeRedis.NodeRedis["Service"], timeout: Duration.Duration) =>
  nodeRedis.use((client) => client.close()).pipe(
    Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.sync(() => nodeRedis.client.destroy()) }),
    Effect.ignore
  )

export const layerRedisStore = (options: RedisStoreOptions): Layer.Layer<RegistryStore, StoreError> =>
  Layer.effect(
    RegistryStore,
    Effect.gen(function*() {
      const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
      const timeout = Duration.millis(timeoutMs)
      const connectFailed = (detail: string) => new StoreError({ operation: "connect", detail })
      const context = yield* Layer.build(NodeRedis.layer({
        url: options.url,
        disableOfflineQueue: true,
        commandsQueueMaxLength: MAX_QUEUED_COMMANDS,
        socket: { connectTimeout: timeoutMs }
      })).pipe(
        Effect.mapError((error) => connectFailed(describeCause(error.cause))),
        Effect.timeoutOrElse({
          duration: timeout,
          orElse: () => Effect.fail(connectFailed(`no answer from ${options.url} within ${timeoutMs} ms`))
        })
      )
      yield* Effect.addFinalizer(() => closeClient(Context.get(context, NodeRedis.NodeRedis), timeout))
      return makeStore(
        Context.get(context, Redis.Redis),
        options.keyPrefix ?? DEFAULT_KEY_PREFIX,
        options.limits ?? defaultMemoryLimits,
        timeoutMs
      )
    })
  )

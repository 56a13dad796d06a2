/**
 * The embedded registry store (the default): state in memory, persisted as one JSON snapshot file written
 * atomically by a coalescing saver fiber (at most one write per second under load, a final one at shutdown).
 * A restart restores every node, hostname, trust pair and inbox from the snapshot. A snapshot that cannot be
 * read is an error with a hint; the file is never overwritten, so nothing an operator could recover is lost.
 */
import { Clock, Effect, FileSystem, Layer, Path, Schedule, Schema } from "effect"
import { makeCoalescingSaver } from "../lifecycle/coalescing-saver.ts"
import { writeFileAtomic } from "../lifecycle/atomic-file.ts"
import { defaultMemoryLimits, type MemoryLimits, type MemorySnapshot, MemoryState } from "./memory-state.ts"
import { RegistryStore, StoredInboxItem, StoredNodeId, StoreError } from "./store.ts"

export interface EmbeddedStoreOptions {
  /** Snapshot file; no persistence when absent. */
  readonly path?: string
  readonly limits?: MemoryLimits
}

export class SnapshotUnreadable extends Schema.TaggedError<SnapshotUnreadable>()("SnapshotUnreadable", {
  path: Schema.String,
  detail: Schema.String
}) {
  get code(): string {
    return "store_corrupt"
  }
  get hint(): string {
    return `move ${this.path} aside to start with an empty registry (it is never overwritten), or restore a backup`
  }
  override get message(): string {
    return `registry snapshot ${this.path} is unreadable: ${this.detail}`
  }
}

const NodeId = StoredNodeId
const Lease = Schema.Struct({
  nodeId: NodeId,
  publicKey: Schema.String,
  realAddr: Schema.String,
  hostname: Schema.optionalKey(Schema.String),
  tags: Schema.Array(Schema.String),
  public: Schema.Boolean,
  relayOnly: Schema.Boolean,
  owner: Schema.optionalKey(Schema.String),
  version: Schema.optionalKey(Schema.String),
  lastSeenMs: Schema.Number
})
const SnapshotFile = Schema.fromJsonString(Schema.Struct({
  format: Schema.Literal("pilotfish-registry-snapshot/1"),
  nextNodeId: NodeId,
  keys: Schema.Array(Schema.Tuple([NodeId, Schema.String])),
  leases: Schema.Array(Lease),
  trustReports: Schema.Array(Schema.String),
  inboxes: Schema.Array(Schema.Tuple([NodeId, Schema.Array(StoredInboxItem)]))
}))

const encodeSnapshot = (snapshot: MemorySnapshot): string =>
  Schema.encodeSync(SnapshotFile)({ format: "pilotfish-registry-snapshot/1", ...snapshot })

const loadSnapshot = Effect.fn("loadSnapshot")(function*(path: string) {
  const fs = yield* FileSystem.FileSystem
  const unreadable = (detail: string) => new SnapshotUnreadable({ path, detail })
  if (!(yield* fs.exists(path).pipe(Effect.mapError((e) => unreadable(e.message))))) return undefined
  const text = yield* fs.readFileString(path).pipe(Effect.mapError((e) => unreadable(e.message)))
  const decoded = yield* Schema.decodeUnknownEffect(SnapshotFile)(text).pipe(Effect.mapError((e) => unreadable(e.message)))
  const { format: _format, ...snapshot } = decoded
  return snapshot satisfies MemorySnapshot
})

/** Reaping frees memory and hostnames of expired leases early; reads check expiry themselves. */
const REAP_INTERVAL = "60 seconds"

export const layerEmbeddedStore = (options: EmbeddedStoreOptions = {}) =>
  Layer.effect(
    RegistryStore,
    Effect.gen(function*() {
      const limits = options.limits ?? defaultMemoryLimits
      const path = options.path
      const state = new MemoryState(limits, path === undefined ? undefined : yield* loadSnapshot(path))
      let markDirty = (): void => {}
      if (path !== undefined) {
        const pathService = yield* Path.Path
        yield* FileSystem.FileSystem.use((fs) => fs.makeDirectory(pathService.dirname(path), { recursive: true })).pipe(
          Effect.mapError((e) => new StoreError({ operation: "open", detail: e.message }))
        )
        const saver = yield* makeCoalescingSaver({
          name: "registry snapshot",
          snapshot: Effect.sync(() => encodeSnapshot(state.snapshot())),
          write: (data) => writeFileAtomic(path, data),
          debounce: "1 second"
        })
        markDirty = saver.markDirty
      }
      yield* Effect.forkScoped(
        Effect.gen(function*() {
          const dropped = state.reap(yield* Clock.currentTimeMillis)
          if (dropped > 0) {
            markDirty()
            yield* Effect.logDebug(`reaped ${dropped} expired node leases`)
          }
        }).pipe(Effect.repeat({ schedule: Schedule.spaced(REAP_INTERVAL) }))
      )

      const read = <A>(f: () => A) => Effect.sync(f)
      const write = <A>(f: () => A) =>
        Effect.sync(() => {
          const result = f()
          markDirty()
          return result
        })
      return RegistryStore.of({
        register: (input) => write(() => state.register(input)),
        // Heartbeats only move a lease's deadline: saving for each would rewrite the whole snapshot every second
        // under load. After a restart a lease may therefore look older than it is; its node hears "node not
        // found" on its next heartbeat and re-registers at once (reference §6), which is the designed path.
        heartbeat: (nodeId, nowMs) => read(() => state.heartbeat(nodeId, nowMs)),
        lease: (nodeId, nowMs) => read(() => state.lease(nodeId, nowMs)),
        nodeIdOfKey: (publicKey) => read(() => state.nodeIdOfKey(publicKey)),
        boundKey: (nodeId) => read(() => state.boundKey(nodeId)),
        resolveHostname: (hostname, nowMs) => read(() => state.resolveHostname(hostname, nowMs)),
        setHostname: (nodeId, hostname, nowMs) => write(() => state.setHostname(nodeId, hostname, nowMs)),
        setVisibility: (nodeId, isPublic, nowMs) => write(() => state.setVisibility(nodeId, isPublic, nowMs)),
        setTags: (nodeId, tags, nowMs) => write(() => state.setTags(nodeId, tags, nowMs)),
        deregister: (nodeId) => write(() => state.deregister(nodeId)),
        rotateKey: (nodeId, key) => write(() => state.rotateKey(nodeId, key)),
        reportTrust: (from, to) => write(() => state.reportTrust(from, to)),
        revokeTrust: (a, b) => write(() => state.revokeTrust(a, b)),
        hasTrust: (a, b) => read(() => state.hasTrust(a, b)),
        pushInbox: (nodeId, item) => write(() => state.pushInbox(nodeId, item)),
        drainInbox: (nodeId) => write(() => state.drainInbox(nodeId)),
        // Beacons are not persisted: they re-register every 30 s and expire after 60.
        registerBeacon: (beacon, nowMs) => read(() => state.registerBeacon(beacon, nowMs)),
        listBeacons: (nowMs) => read(() => state.listBeacons(nowMs)),
        nodesOnline: (nowMs) => read(() => state.nodesOnline(nowMs))
      })
    })
  )

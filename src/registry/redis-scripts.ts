/**
 * The Lua scripts behind the Redis registry store. Every operation that reads and then writes runs as one
 * script, so two registry processes sharing a Redis can never interleave halfway through a registration or a
 * hostname claim. Each script takes the key prefix as its first argument and derives its keys from it (the
 * per-node keys depend on lookups made inside the script); that is fine for one Redis server or a primary with
 * replicas, not for Redis Cluster.
 *
 * Time is always the caller's `nowMs`, never Redis's clock: a lease is live iff `nowMs - lastSeenMs < LEASE_MS`,
 * exactly as in the embedded store, and an expired lease seen by any script is dropped on the spot (its hostname
 * freed), as the embedded store does on read. Numbers that Lua would reformat (13-digit milliseconds) are stored
 * as the caller's own strings; Lua only compares them.
 *
 * Replies are raw Redis values; the store decodes them with schemas.
 */
import { Redis } from "effect/persistence"
import { BEACON_TTL_MS, INBOX_CAPACITY, LEASE_MS } from "./store.ts"

/**
 * Real Redis TTL on lease and hostname keys, renewed on every register and heartbeat. Garbage collection only:
 * an hour past the logical expiry, so in normal operation it never disagrees with the `nowMs` rule. It is a
 * duration from the write, because callers' `nowMs` need not be near Redis's clock.
 */
export const GC_TTL_MS = LEASE_MS + 60 * 60_000

/** Expired leases a single `nodes_online` call reaps at most, so one call cannot block Redis for long. */
const REAP_BATCH = 1000

/** Key names relative to the prefix; the module header of `redis-store.ts` documents what each holds. */
export const keys = {
  nextNode: "next-node",
  nodeOfKey: "node-of-key",
  keyOfNode: "key-of-node",
  lease: "lease:",
  hostname: "host:",
  online: "online",
  trustReports: "trust-reports",
  inbox: "inbox:",
  beaconSeen: "beacon-seen",
  beaconAddr: "beacon-addr"
} as const

const prelude = `
local prefix = ARGV[1]
local LEASE_MS = ${LEASE_MS}
local GC_TTL_MS = ${GC_TTL_MS}
local NODE_OF_KEY = prefix .. "${keys.nodeOfKey}"
local KEY_OF_NODE = prefix .. "${keys.keyOfNode}"
local ONLINE = prefix .. "${keys.online}"
local function lease_key(id) return prefix .. "${keys.lease}" .. id end
local function host_key(name) return prefix .. "${keys.hostname}" .. name end

local function release_hostname(name, id)
  if name and redis.call("GET", host_key(name)) == id then redis.call("DEL", host_key(name)) end
end

local function drop_lease(id)
  release_hostname(redis.call("HGET", lease_key(id), "hostname"), id)
  redis.call("DEL", lease_key(id))
  redis.call("ZREM", ONLINE, id)
end

-- The lease as a field table plus its flat HGETALL form, or nil when there is none live at now.
local function live_lease(id, now)
  local flat = redis.call("HGETALL", lease_key(id))
  if #flat == 0 then return nil end
  local lease = {}
  for i = 1, #flat, 2 do lease[flat[i]] = flat[i + 1] end
  if now - tonumber(lease.lastSeenMs) >= LEASE_MS then
    drop_lease(id)
    return nil
  end
  return lease, flat
end

local function live_holder(name, now)
  local holder = redis.call("GET", host_key(name))
  if not holder then return nil end
  local lease = live_lease(holder, now)
  if lease and lease.hostname == name then return holder end
  return nil
end

local function hostname_free(name, id, now)
  local holder = live_holder(name, now)
  return holder == nil or holder == id
end

local function claim_hostname(name, id)
  redis.call("SET", host_key(name), id, "PX", GC_TTL_MS)
end
`

const script = <Params extends ReadonlyArray<string | number>>(body: string) =>
  Redis.script((prefix: string, ...params: Params) => [prefix, ...params], {
    lua: prelude + body,
    numberOfKeys: 0
  }).withReturnType<unknown>()

/** Optional strings travel as a presence flag and a value, so `""` and "absent" stay distinct. */
export type OptionalArg = readonly [present: "0" | "1", value: string]
export const optionalArg = (value: string | undefined): OptionalArg => (value === undefined ? ["0", ""] : ["1", value])

/**
 * Binds a new key to the next node ID (or finds its old one), then writes the lease, keeping the previous live
 * lease's tags, visibility and hostname, and claiming the requested hostname if no other live node holds it.
 * Reply: `{"full"}` or `{"registered", nodeId, reclaimed 0|1, hostnameTaken 0|1, leaseFields}`.
 */
export const register = script<[
  nowMs: string,
  publicKey: string,
  realAddr: string,
  relayOnly: string,
  ...hostname: OptionalArg,
  ...owner: OptionalArg,
  ...version: OptionalArg,
  maxNodes: number,
  maxNodeId: number
]>(`
local now = tonumber(ARGV[2])
local public_key = ARGV[3]
local NEXT_NODE = prefix .. "${keys.nextNode}"
local id = redis.call("HGET", NODE_OF_KEY, public_key)
local reclaimed = 1
if not id then
  reclaimed = 0
  if redis.call("HLEN", KEY_OF_NODE) >= tonumber(ARGV[12]) then return {"full"} end
  if tonumber(redis.call("GET", NEXT_NODE) or "0") >= tonumber(ARGV[13]) then return {"full"} end
  id = tostring(redis.call("INCR", NEXT_NODE))
  redis.call("HSET", KEY_OF_NODE, id, public_key)
  redis.call("HSET", NODE_OF_KEY, public_key, id)
end
local previous = live_lease(id, now)
local hostname = previous and previous.hostname
local taken = 0
if ARGV[6] == "1" and ARGV[7] ~= hostname then
  if hostname_free(ARGV[7], id, now) then hostname = ARGV[7] else taken = 1 end
end
if previous and previous.hostname ~= hostname then release_hostname(previous.hostname, id) end
local fields = {
  "publicKey", public_key, "realAddr", ARGV[4],
  "tags", previous and previous.tags or "[]", "public", previous and previous.public or "0",
  "relayOnly", ARGV[5], "lastSeenMs", ARGV[2]
}
if hostname then
  table.insert(fields, "hostname")
  table.insert(fields, hostname)
  claim_hostname(hostname, id)
end
for i = 8, 10, 2 do
  if ARGV[i] == "1" then
    table.insert(fields, i == 8 and "owner" or "version")
    table.insert(fields, ARGV[i + 1])
  end
end
redis.call("DEL", lease_key(id))
redis.call("HSET", lease_key(id), unpack(fields))
redis.call("PEXPIRE", lease_key(id), GC_TTL_MS)
redis.call("ZADD", ONLINE, ARGV[2], id)
return {"registered", tonumber(id), reclaimed, taken, fields}
`)

/** Reply: 1 when a live lease was renewed, 0 when there is none. */
export const heartbeat = script<[nowMs: string, nodeId: string]>(`
local id = ARGV[3]
local lease = live_lease(id, tonumber(ARGV[2]))
if not lease then return 0 end
if tonumber(ARGV[2]) > tonumber(lease.lastSeenMs) then
  redis.call("HSET", lease_key(id), "lastSeenMs", ARGV[2])
  redis.call("ZADD", ONLINE, ARGV[2], id)
end
redis.call("PEXPIRE", lease_key(id), GC_TTL_MS)
if lease.hostname then redis.call("PEXPIRE", host_key(lease.hostname), GC_TTL_MS) end
return 1
`)

/** Reply: the live lease's flat field list, empty when there is none. */
export const lease = script<[nowMs: string, nodeId: string]>(`
local lease, flat = live_lease(ARGV[3], tonumber(ARGV[2]))
if lease then return flat end
return {}
`)

/** Reply: the node ID holding the hostname with a live lease, or nil. */
export const resolveHostname = script<[nowMs: string, hostname: string]>(`
local holder = live_holder(ARGV[3], tonumber(ARGV[2]))
if holder then return tonumber(holder) end
return nil
`)

/** Reply: "ok" | "not_found" | "taken". An empty hostname clears it. */
export const setHostname = script<[nowMs: string, nodeId: string, hostname: string]>(`
local now, id, name = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lease = live_lease(id, now)
if not lease then return "not_found" end
if name ~= "" and not hostname_free(name, id, now) then return "taken" end
if lease.hostname ~= name then release_hostname(lease.hostname, id) end
if name == "" then
  redis.call("HDEL", lease_key(id), "hostname")
else
  redis.call("HSET", lease_key(id), "hostname", name)
  claim_hostname(name, id)
end
return "ok"
`)

/** Sets one already-encoded field of a live lease. Reply: "ok" | "not_found". */
export const setLeaseField = script<[nowMs: string, nodeId: string, field: "public" | "tags", value: string]>(`
if not live_lease(ARGV[3], tonumber(ARGV[2])) then return "not_found" end
redis.call("HSET", lease_key(ARGV[3]), ARGV[4], ARGV[5])
return "ok"
`)

/** Ends a lease, live or not yet reaped (as the embedded store does). Reply: "ok" | "not_found". */
export const deregister = script<[nodeId: string]>(`
if redis.call("EXISTS", lease_key(ARGV[2])) == 0 then return "not_found" end
drop_lease(ARGV[2])
return "ok"
`)

/** Reply: "ok" | "not_found" | "key_in_use". */
export const rotateKey = script<[nodeId: string, newPublicKey: string]>(`
local id, new_key = ARGV[2], ARGV[3]
local old_key = redis.call("HGET", KEY_OF_NODE, id)
if not old_key then return "not_found" end
local holder = redis.call("HGET", NODE_OF_KEY, new_key)
if holder and holder ~= id then return "key_in_use" end
redis.call("HDEL", NODE_OF_KEY, old_key)
redis.call("HSET", NODE_OF_KEY, new_key, id)
redis.call("HSET", KEY_OF_NODE, id, new_key)
if redis.call("EXISTS", lease_key(id)) == 1 then redis.call("HSET", lease_key(id), "publicKey", new_key) end
return "ok"
`)

/** Reply: "ok" | "full" (a new report past the cap). */
export const reportTrust = script<[report: string, maxReports: number]>(`
local REPORTS = prefix .. "${keys.trustReports}"
if redis.call("SISMEMBER", REPORTS, ARGV[2]) == 0 and redis.call("SCARD", REPORTS) >= tonumber(ARGV[3]) then
  return "full"
end
redis.call("SADD", REPORTS, ARGV[2])
return "ok"
`)

/** Reply: "ok" | "full" (the inbox already holds `INBOX_CAPACITY` items). */
export const pushInbox = script<[nodeId: string, item: string]>(`
local inbox = prefix .. "${keys.inbox}" .. ARGV[2]
if redis.call("LLEN", inbox) >= ${INBOX_CAPACITY} then return "full" end
redis.call("RPUSH", inbox, ARGV[3])
return "ok"
`)

/** Reply: the inbox's items in arrival order; the inbox is gone afterwards. */
export const drainInbox = script<[nodeId: string]>(`
local inbox = prefix .. "${keys.inbox}" .. ARGV[2]
local items = redis.call("LRANGE", inbox, 0, -1)
redis.call("DEL", inbox)
return items
`)

const reapBeacons = `
local SEEN = prefix .. "${keys.beaconSeen}"
local ADDR = prefix .. "${keys.beaconAddr}"
local function reap_beacons(now)
  for _, id in ipairs(redis.call("ZRANGEBYSCORE", SEEN, "-inf", now - ${BEACON_TTL_MS})) do
    redis.call("ZREM", SEEN, id)
    redis.call("HDEL", ADDR, id)
  end
end
`

/** Reply: "ok" | "full" (a new beacon past the cap, after dropping quiet ones). */
export const registerBeacon = script<[nowMs: string, beaconId: string, addr: string, maxBeacons: number]>(`${reapBeacons}
if not redis.call("ZSCORE", SEEN, ARGV[3]) then
  reap_beacons(tonumber(ARGV[2]))
  if redis.call("ZCARD", SEEN) >= tonumber(ARGV[5]) then return "full" end
end
redis.call("ZADD", SEEN, ARGV[2], ARGV[3])
redis.call("HSET", ADDR, ARGV[3], ARGV[4])
return "ok"
`)

/** Reply: `{beaconId, addr}` pairs of the beacons heard from within `BEACON_TTL_MS`. */
export const listBeacons = script<[nowMs: string]>(`${reapBeacons}
reap_beacons(tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(redis.call("ZRANGE", SEEN, 0, -1)) do
  table.insert(out, {tonumber(id), redis.call("HGET", ADDR, id)})
end
return out
`)

/**
 * Reaps a bounded batch of expired leases (freeing their hostnames early, like the embedded reaper), then
 * counts the leases seen within `LEASE_MS`. Reply: the count.
 */
export const nodesOnline = script<[nowMs: string]>(`
local now = tonumber(ARGV[2])
local horizon = now - LEASE_MS
for _, id in ipairs(redis.call("ZRANGEBYSCORE", ONLINE, "-inf", horizon, "LIMIT", 0, ${REAP_BATCH})) do
  local lease = live_lease(id, now)
  if lease then redis.call("ZADD", ONLINE, lease.lastSeenMs, id) else redis.call("ZREM", ONLINE, id) end
end
return redis.call("ZCOUNT", ONLINE, string.format("(%.17g", horizon), "+inf")
`)

import { describe, expect, it } from "@effect/vitest"
import { Result } from "effect"
import fc from "fast-check"
import type { DecodeError } from "../../src/protocol/errors.ts"
import { encodeJsonFrame, makeFrameSplitter } from "../../src/protocol/length-prefixed.ts"
import {
  decodeRegistryReply,
  decodeRegistryReplyBody,
  decodeRegistryRequest,
  decodeRegistryRequestBody,
  encodeRegistryReply,
  encodeRegistryRequest,
  RegistryErrorCode,
  registryChallenge,
  registryErrorCodeOf,
  type RegistryReply,
  type RegistryReplyType,
  type RegistryRequest,
  type RegistryRequestType,
  RESERVED_HOSTNAMES,
  TAG_PATTERN,
  validateHostname
} from "../../src/protocol/registry.ts"
import { failure, ok } from "./arbitraries.ts"


/** The single body a frame carries, as the registry's reader would see it. */
const bodyOf = (frame: Uint8Array): Uint8Array => {
  const bodies = ok(makeFrameSplitter().push(frame))
  expect(bodies.length).toBe(1)
  return bodies[0] as Uint8Array
}

// ---------------------------------------------------------------------------------------------------------
// Arbitraries of valid messages, typed so that a message type missing here is a compile error
// ---------------------------------------------------------------------------------------------------------

const nodeId = fc.integer({ min: 0, max: 0xffffffff })
const networkId = fc.integer({ min: 0, max: 0xffff })
const base64Of = (bytes: number) =>
  fc.uint8Array({ minLength: bytes, maxLength: bytes }).map((b) => Buffer.from(b).toString("base64"))
const publicKey = base64Of(32)
const signature = base64Of(64)
const text = fc.string({ unit: "binary", maxLength: 30 })
const seconds = fc.integer({ min: 0, max: 2 ** 40 })
const hostname = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/).filter((h) => !RESERVED_HOSTNAMES.includes(h))
const tag = fc.stringMatching(TAG_PATTERN)
const strings = fc.array(text, { maxLength: 4 })

/** A record whose `optional` keys may be absent (never present-but-undefined). */
const withOptional = <R extends object, O extends object>(
  required: { [K in keyof R]: fc.Arbitrary<R[K]> },
  optional: { [K in keyof O]: fc.Arbitrary<O[K]> }
): fc.Arbitrary<R & Partial<O>> =>
  fc.tuple(fc.record(required), fc.record(optional, { requiredKeys: [] })).map(([r, o]) => ({ ...r, ...o }) as R & Partial<O>)

const msg = <T extends string>(type: T) => <F extends object>(fields: fc.Arbitrary<F>) => fields.map((f) => ({ type, ...f }))

type RequestOf<K extends RegistryRequestType> = Extract<RegistryRequest, { readonly type: K }>
type ReplyOf<K extends RegistryReplyType> = Extract<RegistryReply, { readonly type: K }>

const requests: { readonly [K in RegistryRequestType]: fc.Arbitrary<RequestOf<K>> } = {
  register: msg("register")(withOptional(
    { listen_addr: text, public_key: publicKey },
    { owner: text, hostname: text, lan_addrs: strings, version: text, relay_only: fc.boolean(), signature }
  )),
  heartbeat: msg("heartbeat")(withOptional({ node_id: nodeId }, { signature })),
  lookup: msg("lookup")(fc.record({ node_id: nodeId })),
  resolve: msg("resolve")(withOptional({ node_id: nodeId, requester_id: nodeId }, { signature })),
  set_hostname: msg("set_hostname")(
    withOptional({ node_id: nodeId, hostname: fc.oneof(fc.constant(""), hostname) }, { signature })
  ),
  resolve_hostname: msg("resolve_hostname")(withOptional({ hostname }, { requester_id: nodeId })),
  set_visibility: msg("set_visibility")(withOptional({ node_id: nodeId, public: fc.boolean() }, { signature })),
  set_tags: msg("set_tags")(withOptional({ node_id: nodeId, tags: fc.array(tag, { maxLength: 3 }) }, { signature })),
  deregister: msg("deregister")(withOptional({ node_id: nodeId }, { signature })),
  report_trust: msg("report_trust")(withOptional({ node_id: nodeId, peer_id: nodeId }, { signature })),
  revoke_trust: msg("revoke_trust")(withOptional({ node_id: nodeId, peer_id: nodeId }, { signature })),
  request_handshake: msg("request_handshake")(
    withOptional({ from_node_id: nodeId, to_node_id: nodeId, justification: text }, { signature })
  ),
  poll_handshakes: msg("poll_handshakes")(withOptional({ node_id: nodeId }, { signature })),
  respond_handshake: msg("respond_handshake")(
    withOptional({ node_id: nodeId, peer_id: nodeId, accept: fc.boolean() }, { signature })
  ),
  punch: msg("punch")(withOptional({ requester_id: nodeId, node_a: nodeId, node_b: nodeId }, { signature })),
  beacon_register: msg("beacon_register")(withOptional({ beacon_id: nodeId, addr: text }, { admin_token: text })),
  beacon_list: msg("beacon_list")(fc.constant({})),
  rotate_key: msg("rotate_key")(withOptional({ node_id: nodeId, new_public_key: publicKey }, { signature }))
}

const replies: { readonly [K in RegistryReplyType]: fc.Arbitrary<ReplyOf<K>> } = {
  register_ok: msg("register_ok")(withOptional(
    { node_id: nodeId, network_id: networkId, address: text, public_key: publicKey },
    { hostname: text, hostname_error: text, observed_addr: text }
  )),
  heartbeat_ok: msg("heartbeat_ok")(withOptional({ time: seconds }, { key_expiry_warning: fc.boolean() })),
  lookup_ok: msg("lookup_ok")(withOptional(
    { node_id: nodeId, address: text, networks: fc.array(networkId, { maxLength: 4 }), public_key: publicKey, public: fc.boolean() },
    {
      polo_score: fc.integer(),
      hostname: text,
      tags: strings,
      task_exec: fc.boolean(),
      real_addr: text,
      relay_only: fc.boolean(),
      last_seen_unix: seconds,
      key_generation: fc.nat()
    }
  )),
  resolve_ok: msg("resolve_ok")(withOptional(
    { node_id: nodeId, real_addr: text },
    { lan_addrs: strings, relay_only: fc.boolean(), key_age_days: fc.nat() }
  )),
  set_hostname_ok: msg("set_hostname_ok")(fc.record({ node_id: nodeId, hostname: text })),
  resolve_hostname_ok: msg("resolve_hostname_ok")(
    withOptional({ node_id: nodeId, address: text }, { public: fc.boolean(), hostname: text })
  ),
  set_visibility_ok: msg("set_visibility_ok")(
    fc.record({ node_id: nodeId, visibility: fc.constantFrom("public" as const, "private" as const) })
  ),
  set_tags_ok: msg("set_tags_ok")(fc.record({ node_id: nodeId, tags: strings })),
  deregister_ok: msg("deregister_ok")(fc.constant({})),
  report_trust_ok: msg("report_trust_ok")(fc.constant({})),
  revoke_trust_ok: msg("revoke_trust_ok")(fc.constant({})),
  request_handshake_ok: msg("request_handshake_ok")(fc.constant({})),
  poll_handshakes_ok: msg("poll_handshakes_ok")(fc.record({
    requests: fc.array(withOptional({ from_node_id: nodeId, justification: text }, { timestamp: seconds }), { maxLength: 3 }),
    responses: fc.array(withOptional({ from_node_id: nodeId, accept: fc.boolean() }, { timestamp: seconds }), { maxLength: 3 })
  })),
  respond_handshake_ok: msg("respond_handshake_ok")(fc.constant({})),
  punch_ok: msg("punch_ok")(fc.record({ node_a: nodeId, node_a_addr: text, node_b: nodeId, node_b_addr: text })),
  beacon_register_ok: msg("beacon_register_ok")(fc.record({ beacon_id: nodeId })),
  beacon_list_ok: msg("beacon_list_ok")(fc.record({ beacons: fc.array(fc.record({ id: nodeId, addr: text }), { maxLength: 3 }) })),
  rotate_key_ok: msg("rotate_key_ok")(fc.record({ node_id: nodeId, address: text, public_key: publicKey })),
  error: msg("error")(withOptional({ error: text }, { code: fc.constantFrom(...RegistryErrorCode.literals) }))
}

// ---------------------------------------------------------------------------------------------------------

describe("registry round trip", () => {
  it("decodes every request type it encodes", () => {
    for (const arbitrary of Object.values(requests)) {
      fc.assert(
        fc.property(arbitrary as fc.Arbitrary<RegistryRequest>, (request) => {
          expect(ok(decodeRegistryRequestBody(bodyOf(ok(encodeRegistryRequest(request)))))).toEqual(request)
        }),
        { numRuns: 60 }
      )
    }
  })

  it("decodes every reply type it encodes", () => {
    for (const arbitrary of Object.values(replies)) {
      fc.assert(
        fc.property(arbitrary as fc.Arbitrary<RegistryReply>, (reply) => {
          expect(ok(decodeRegistryReplyBody(bodyOf(ok(encodeRegistryReply(reply)))))).toEqual(reply)
        }),
        { numRuns: 60 }
      )
    }
  })

  it("reads what Go peers send, dropping fields it does not know", () => {
    const goRegisterOk = JSON.parse(
      `{"address":"0:0000.0000.0007","hostname_error":"hostname \\"Bad\\" is invalid","network_id":0,"node_id":7,` +
        `"observed_addr":"1.2.3.4:5000","protocol_version":2,"public_key":"${"A".repeat(43)}=","type":"register_ok"}`
    ) as unknown
    expect(ok(decodeRegistryReply(goRegisterOk))).toEqual({
      type: "register_ok",
      node_id: 7,
      network_id: 0,
      address: "0:0000.0000.0007",
      public_key: `${"A".repeat(43)}=`,
      hostname_error: "hostname \"Bad\" is invalid",
      observed_addr: "1.2.3.4:5000"
    })
    expect(ok(decodeRegistryReply({ type: "beacon_list_ok", beacons: [{ id: 2, addr: "10.0.0.1:9001" }] })))
      .toEqual({ type: "beacon_list_ok", beacons: [{ id: 2, addr: "10.0.0.1:9001" }] })
    expect(ok(decodeRegistryReply({ type: "error", error: "node 9: not found" })))
      .toEqual({ type: "error", error: "node 9: not found" })
    // A Go registry allows up to 10 tags; a client must not reject that answer.
    const tags = ["a", "b", "c", "d", "e"]
    expect(ok(decodeRegistryReply({ type: "set_tags_ok", node_id: 1, tags }))).toEqual({ type: "set_tags_ok", node_id: 1, tags })
  })
})

describe("registry request validation", () => {
  const key = Buffer.alloc(32, 1).toString("base64")
  const sig = Buffer.alloc(64, 2).toString("base64")
  const cases: ReadonlyArray<readonly [string, unknown, DecodeError["reason"], string, RegistryErrorCode]> = [
    ["a non-object", [1, 2], "invalid", "string `type`", "bad_request"],
    ["a missing type", { node_id: 1 }, "invalid", "string `type`", "bad_request"],
    ["an unknown type", { type: "create_network" }, "bad_magic", "create_network", "unknown_type"],
    ["a prototype key as type", { type: "__proto__" }, "bad_magic", "__proto__", "unknown_type"],
    ["a missing node_id", { type: "lookup" }, "invalid", "lookup.node_id", "bad_request"],
    ["a string node_id", { type: "lookup", node_id: "1" }, "invalid", "lookup.node_id", "bad_request"],
    ["a negative node_id", { type: "heartbeat", node_id: -1 }, "invalid", "heartbeat.node_id", "bad_request"],
    ["a node_id past u32", { type: "heartbeat", node_id: 2 ** 32 }, "invalid", "heartbeat.node_id", "bad_request"],
    ["a fractional node_id", { type: "deregister", node_id: 1.5 }, "invalid", "deregister.node_id", "bad_request"],
    ["a non-boolean public", { type: "set_visibility", node_id: 1, public: 1 }, "invalid", "set_visibility.public", "bad_request"],
    ["a missing public_key", { type: "register", listen_addr: ":1" }, "invalid", "register.public_key", "bad_request"],
    ["a 31-byte key", { type: "register", listen_addr: ":1", public_key: Buffer.alloc(31).toString("base64") }, "invalid", "register.public_key", "bad_request"],
    ["a 33-byte key", { type: "rotate_key", node_id: 1, new_public_key: Buffer.alloc(33).toString("base64") }, "invalid", "rotate_key.new_public_key", "bad_request"],
    ["an unpadded key", { type: "register", listen_addr: ":1", public_key: key.slice(0, -1) }, "invalid", "register.public_key", "bad_request"],
    ["a url-safe key", { type: "register", listen_addr: ":1", public_key: `-_${key.slice(2)}` }, "invalid", "register.public_key", "bad_request"],
    ["a key with non-zero pad bits", { type: "register", listen_addr: ":1", public_key: `${key.slice(0, 42)}B=` }, "invalid", "register.public_key", "bad_request"],
    ["a 63-byte signature", { type: "heartbeat", node_id: 1, signature: Buffer.alloc(63).toString("base64") }, "invalid", "heartbeat.signature", "invalid_signature"],
    ["a non-base64 signature", { type: "punch", requester_id: 1, node_a: 1, node_b: 2, signature: `${sig.slice(0, -3)}!==` }, "invalid", "punch.signature", "invalid_signature"],
    ["an upper-case hostname", { type: "set_hostname", node_id: 1, hostname: "Agent" }, "invalid", "set_hostname.hostname", "invalid_hostname"],
    ["a reserved hostname", { type: "set_hostname", node_id: 1, hostname: "backbone" }, "invalid", "reserved", "invalid_hostname"],
    ["a 64-character hostname", { type: "set_hostname", node_id: 1, hostname: "a".repeat(64) }, "invalid", "63", "invalid_hostname"],
    ["an empty hostname to resolve", { type: "resolve_hostname", hostname: "" }, "invalid", "resolve_hostname.hostname", "invalid_hostname"],
    ["a hostname with a trailing hyphen", { type: "resolve_hostname", hostname: "agent-" }, "invalid", "resolve_hostname.hostname", "invalid_hostname"],
    ["four tags", { type: "set_tags", node_id: 1, tags: ["a", "b", "c", "d"] }, "invalid", "at most 3 tags", "invalid_tags"],
    ["a 33-character tag", { type: "set_tags", node_id: 1, tags: ["a".repeat(33)] }, "invalid", "set_tags.tags.0", "invalid_tags"],
    ["a tag with an underscore", { type: "set_tags", node_id: 1, tags: ["ok", "no_pe"] }, "invalid", "set_tags.tags.1", "invalid_tags"],
    ["tags that are not an array", { type: "set_tags", node_id: 1, tags: "ml" }, "invalid", "set_tags.tags", "invalid_tags"]
  ]
  for (const [name, input, reason, mentions, code] of cases) {
    it(`rejects ${name}`, () => {
      const error = failure(decodeRegistryRequest(input))
      expect(error.reason).toBe(reason)
      expect(error.message).toContain(mentions)
      expect(registryErrorCodeOf(error)).toBe(code)
    })
  }

  it("accepts an empty hostname as the clear value of set_hostname", () => {
    expect(ok(decodeRegistryRequest({ type: "set_hostname", node_id: 1, hostname: "" })))
      .toEqual({ type: "set_hostname", node_id: 1, hostname: "" })
  })

  it("keeps an invalid hostname in register, for the registry to report as hostname_error", () => {
    expect(ok(decodeRegistryRequest({ type: "register", listen_addr: ":4000", public_key: key, hostname: "Not Valid" })))
      .toEqual({ type: "register", listen_addr: ":4000", public_key: key, hostname: "Not Valid" })
  })

  it("refuses an error reply with an unknown code", () => {
    expect(failure(decodeRegistryReply({ type: "error", error: "x", code: "teapot" })).message).toContain("error.code")
  })

  it("refuses to encode a message outside its domain", () => {
    const error = failure(encodeRegistryRequest({ type: "heartbeat", node_id: 2 ** 32 }))
    expect(error.reason).toBe("invalid")
    expect(error.frame).toBe("registry heartbeat.node_id")
    expect(failure(encodeRegistryReply({ type: "set_visibility_ok", node_id: 1, visibility: "hidden" as "public" })).frame)
      .toBe("registry set_visibility_ok.visibility")
  })

  it("maps a too-large frame to too_large", () => {
    const error = failure(encodeJsonFrame({ type: "lookup", pad: "x".repeat(16) }, 8))
    expect(registryErrorCodeOf(error)).toBe("too_large")
  })
})

describe("validateHostname", () => {
  it("names the problem with a hostname, or accepts it", () => {
    expect(validateHostname("a")).toBeUndefined()
    expect(validateHostname("agent-7")).toBeUndefined()
    expect(validateHostname("0")).toBeUndefined()
    expect(validateHostname("a".repeat(63))).toBeUndefined()
    expect(validateHostname("")).toContain("empty")
    expect(validateHostname("a".repeat(64))).toContain("64 characters")
    expect(validateHostname("-a")).toContain("lowercase")
    expect(validateHostname("a-")).toContain("lowercase")
    expect(validateHostname("a.b")).toContain("lowercase")
    expect(validateHostname("A")).toContain("lowercase")
    for (const reserved of ["localhost", "backbone", "broadcast"]) expect(validateHostname(reserved)).toContain("reserved")
  })

  it("agrees with the Go registry's rule on arbitrary strings", () => {
    const goRegex = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 70 }), fc.stringMatching(/^[a-z0-9-]{1,70}$/)), (name) => {
        const goAccepts = name.length > 0 && goRegex.test(name) && !RESERVED_HOSTNAMES.includes(name)
        expect(validateHostname(name) === undefined).toBe(goAccepts)
      }),
      { numRuns: 500 }
    )
  })
})

describe("registry challenges", () => {
  it("builds the string each signed request signs", () => {
    const sig = Buffer.alloc(64).toString("base64")
    const key = Buffer.alloc(32).toString("base64")
    const expected: ReadonlyArray<readonly [RegistryRequest, string | undefined]> = [
      [{ type: "register", listen_addr: "1.2.3.4:4000", public_key: key }, `register:1.2.3.4:4000:${key}`],
      [{ type: "heartbeat", node_id: 7, signature: sig }, "heartbeat:7"],
      [{ type: "resolve", node_id: 9, requester_id: 3 }, "resolve:3:9"],
      [{ type: "report_trust", node_id: 1, peer_id: 2 }, "report_trust:1:2"],
      [{ type: "revoke_trust", node_id: 2, peer_id: 1 }, "revoke_trust:2:1"],
      [{ type: "poll_handshakes", node_id: 4294967295 }, "poll_handshakes:4294967295"],
      [{ type: "respond_handshake", node_id: 4, peer_id: 5, accept: true }, "respond:4:5"],
      [{ type: "request_handshake", from_node_id: 1, to_node_id: 2, justification: "hi" }, "handshake:1:2"],
      [{ type: "punch", requester_id: 1, node_a: 1, node_b: 8 }, "punch:1:8"],
      [{ type: "set_visibility", node_id: 6, public: true }, "set_visibility:6"],
      [{ type: "set_hostname", node_id: 6, hostname: "" }, "set_hostname:6"],
      [{ type: "set_tags", node_id: 6, tags: [] }, "set_tags:6"],
      [{ type: "deregister", node_id: 6 }, "deregister:6"],
      [{ type: "rotate_key", node_id: 6, new_public_key: key }, "rotate:6"],
      [{ type: "lookup", node_id: 6 }, undefined],
      [{ type: "resolve_hostname", hostname: "a" }, undefined],
      [{ type: "beacon_register", beacon_id: 1, addr: "x:1" }, undefined],
      [{ type: "beacon_list" }, undefined]
    ]
    expect(new Set(expected.map(([request]) => request.type)).size).toBe(Object.keys(requests).length)
    for (const [request, challenge] of expected) expect(registryChallenge(request)).toBe(challenge)
  })
})

describe("registry decoders on hostile input", () => {
  const requestTypes = Object.keys(requests)
  const fieldNames = [
    "node_id", "peer_id", "requester_id", "hostname", "tags", "signature", "public_key", "new_public_key",
    "listen_addr", "public", "accept", "justification", "from_node_id", "to_node_id", "node_a", "node_b",
    "beacon_id", "addr", "lan_addrs", "owner"
  ]

  it("never throw on arbitrary values", () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.anything()), (value) => {
        decodeRegistryRequest(value)
        decodeRegistryReply(value)
      }),
      { numRuns: 500 }
    )
  })

  it("never throw on objects of a known type with random fields, and keep the type when they accept", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...requestTypes),
        fc.dictionary(fc.constantFrom(...fieldNames), fc.jsonValue({ maxDepth: 2 })),
        (type, fields) => {
          const result = decodeRegistryRequest({ ...fields, type })
          if (Result.isSuccess(result)) expect(result.success.type).toBe(type)
          else expect(["invalid"]).toContain(result.failure.reason)
        }
      ),
      { numRuns: 1000 }
    )
  })
})

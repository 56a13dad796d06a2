/**
 * Registry messages (reference §6, Appendix A): one JSON object per length-prefixed frame, each with a `type`.
 *
 * Field names are exactly the Go client's and server's, so Go daemons and registries interoperate unchanged.
 * Requests are validated strictly (node IDs in u32, keys and signatures of the right length, hostnames and
 * tags per §2); replies are validated loosely where a Go registry may legitimately send more than pilotfish
 * would (up to 10 tags, fields an older registry omits), because a client must not reject a good answer.
 * Unknown fields are ignored and dropped on decode, as Go does.
 *
 * Choices where the reference is silent:
 * - `signature` is optional in every signed request. The reference makes it mandatory only when the node has a
 *   key on file, so its absence is the registry's decision (`signature_required`), not a decoding failure.
 * - `beacon_register` is `{beacon_id, addr}` and `beacon_list_ok` is `{beacons: [{id, addr}]}`: those are the Go
 *   registry's and beacon's field names (the Go beacon reads `id`, so a list entry named `beacon_id` would make
 *   it peer with itself).
 * - Error replies are `{type: "error", error, code?}`; `code` is pilotfish's machine-readable addition, ignored
 *   by Go clients.
 */
import { Result, Schema, SchemaIssue } from "effect"
import { DecodeError, decodeFail } from "./errors.ts"
import { decodeJsonObjectBody, encodeJsonFrame } from "./length-prefixed.ts"

// ---------------------------------------------------------------------------------------------------------
// Field domains
// ---------------------------------------------------------------------------------------------------------

export const NodeId = Schema.Number.check(Schema.isUint32({ expected: "a node ID (integer 0..4294967295)" }))
export const NetworkId = Schema.Number.check(
  Schema.isInt(),
  Schema.isBetween({ minimum: 0, maximum: 0xffff }, { expected: "a network ID (integer 0..65535)" })
)
/** Unix time in whole seconds. */
export const UnixSeconds = Schema.Number.check(Schema.isInt({ expected: "unix seconds (an integer)" }))

/**
 * Canonical standard base64 (with padding, zero pad bits) of exactly `bytes` bytes, which is what Go's
 * `base64.StdEncoding` produces, so a valid value re-encodes to the same text.
 */
const base64Of = (bytes: number): RegExp => {
  const quads = Math.floor(bytes / 3)
  const tail = bytes % 3 === 0 ? "" : bytes % 3 === 1 ? "[A-Za-z0-9+/][AQgw]==" : "[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]="
  return new RegExp(`^(?:[A-Za-z0-9+/]{4}){${quads}}${tail}$`)
}

export const ED25519_PUBLIC_KEY_BYTES = 32
export const ED25519_SIGNATURE_BYTES = 64

/** Standard base64 of a 32-byte Ed25519 public key. */
export const PublicKeyB64 = Schema.String.check(
  Schema.isPattern(base64Of(ED25519_PUBLIC_KEY_BYTES), { expected: "standard base64 of a 32-byte Ed25519 public key" })
)
/** Standard base64 of a 64-byte Ed25519 signature. */
export const SignatureB64 = Schema.String.check(
  Schema.isPattern(base64Of(ED25519_SIGNATURE_BYTES), { expected: "standard base64 of a 64-byte Ed25519 signature" })
)

export const MAX_HOSTNAME_LENGTH = 63
export const RESERVED_HOSTNAMES: ReadonlyArray<string> = ["localhost", "backbone", "broadcast"]
const HOSTNAME_PATTERN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/

/**
 * Why `name` is not a usable hostname (§2), or `undefined` when it is. The empty string is not a name (it is
 * the "clear my hostname" value of `set_hostname`, handled by the caller).
 */
export const validateHostname = (name: string): string | undefined => {
  if (name.length === 0) return "hostname is empty"
  if (name.length > MAX_HOSTNAME_LENGTH) return `hostname is ${name.length} characters, at most ${MAX_HOSTNAME_LENGTH} allowed`
  if (!HOSTNAME_PATTERN.test(name)) {
    return "hostname must be lowercase letters, digits and hyphens, starting and ending with a letter or digit"
  }
  if (RESERVED_HOSTNAMES.includes(name)) return `hostname "${name}" is reserved`
  return undefined
}

export const Hostname = Schema.String.check(Schema.makeFilter<string>(validateHostname))
/** A hostname, or "" to clear it (`set_hostname`). */
export const HostnameOrClear = Schema.String.check(
  Schema.makeFilter<string>((name) => name === "" ? undefined : validateHostname(name))
)

export const MAX_TAGS = 3
export const TAG_PATTERN = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/
export const Tag = Schema.String.check(
  Schema.isPattern(TAG_PATTERN, { expected: "a tag (1-32 lowercase letters, digits, inner hyphens)" })
)
export const Tags = Schema.Array(Tag).check(Schema.isMaxLength(MAX_TAGS, { expected: `at most ${MAX_TAGS} tags` }))

// ---------------------------------------------------------------------------------------------------------
// Error codes
// ---------------------------------------------------------------------------------------------------------

export const RegistryErrorCode = Schema.Literals([
  "bad_request", // the message is not a JSON object or a field is missing / of the wrong type / out of range
  "unknown_type", // `type` names no request this registry serves
  "invalid_signature", // signature malformed, or it does not verify against the node's key
  "signature_required", // the node has a key on file and the request carries no signature
  "node_not_found", // a node ID in the request is not registered (or was reaped)
  "hostname_not_found", // no node has that hostname, or it is private and the requester may not see it
  "not_authorized", // authenticated but not allowed: private target, punch by a non-participant, …
  "hostname_taken", // another node holds the hostname
  "invalid_hostname", // the hostname breaks §2 (syntax, length, reserved)
  "invalid_tags", // more than 3 tags or a tag breaks the tag syntax
  "rate_limited", // too many requests from this source; retry later
  "inbox_full", // the target's relayed-handshake inbox is at its cap
  "too_large", // the frame or a field exceeds its size limit
  "registry_full", // no node ID left to allocate
  "read_only", // a standby registry refuses writes
  "internal" // the registry failed; the request may be retried
])
export type RegistryErrorCode = typeof RegistryErrorCode.Type

// ---------------------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------------------

const signed = { signature: Schema.optionalKey(SignatureB64) }

export const RegisterRequest = Schema.Struct({
  type: Schema.Literal("register"),
  listen_addr: Schema.String,
  public_key: PublicKeyB64,
  owner: Schema.optionalKey(Schema.String),
  // A plain string: an invalid hostname does not fail registration, it comes back as `hostname_error`.
  hostname: Schema.optionalKey(Schema.String),
  lan_addrs: Schema.optionalKey(Schema.Array(Schema.String)),
  version: Schema.optionalKey(Schema.String),
  relay_only: Schema.optionalKey(Schema.Boolean),
  ...signed
})
export const HeartbeatRequest = Schema.Struct({ type: Schema.Literal("heartbeat"), node_id: NodeId, ...signed })
export const LookupRequest = Schema.Struct({ type: Schema.Literal("lookup"), node_id: NodeId })
export const ResolveRequest = Schema.Struct({
  type: Schema.Literal("resolve"),
  node_id: NodeId,
  requester_id: NodeId,
  ...signed
})
export const SetHostnameRequest = Schema.Struct({
  type: Schema.Literal("set_hostname"),
  node_id: NodeId,
  hostname: HostnameOrClear,
  ...signed
})
export const ResolveHostnameRequest = Schema.Struct({
  type: Schema.Literal("resolve_hostname"),
  hostname: Hostname,
  requester_id: Schema.optionalKey(NodeId)
})
export const SetVisibilityRequest = Schema.Struct({
  type: Schema.Literal("set_visibility"),
  node_id: NodeId,
  public: Schema.Boolean,
  ...signed
})
export const SetTagsRequest = Schema.Struct({ type: Schema.Literal("set_tags"), node_id: NodeId, tags: Tags, ...signed })
export const DeregisterRequest = Schema.Struct({ type: Schema.Literal("deregister"), node_id: NodeId, ...signed })
const trustPair = { node_id: NodeId, peer_id: NodeId, ...signed }
export const ReportTrustRequest = Schema.Struct({ type: Schema.Literal("report_trust"), ...trustPair })
export const RevokeTrustRequest = Schema.Struct({ type: Schema.Literal("revoke_trust"), ...trustPair })
export const RequestHandshakeRequest = Schema.Struct({
  type: Schema.Literal("request_handshake"),
  from_node_id: NodeId,
  to_node_id: NodeId,
  justification: Schema.String,
  ...signed
})
export const PollHandshakesRequest = Schema.Struct({ type: Schema.Literal("poll_handshakes"), node_id: NodeId, ...signed })
export const RespondHandshakeRequest = Schema.Struct({
  type: Schema.Literal("respond_handshake"),
  node_id: NodeId,
  peer_id: NodeId,
  accept: Schema.Boolean,
  ...signed
})
export const PunchRequest = Schema.Struct({
  type: Schema.Literal("punch"),
  requester_id: NodeId,
  node_a: NodeId,
  node_b: NodeId,
  ...signed
})
export const BeaconRegisterRequest = Schema.Struct({
  type: Schema.Literal("beacon_register"),
  beacon_id: NodeId,
  addr: Schema.String,
  admin_token: Schema.optionalKey(Schema.String)
})
export const BeaconListRequest = Schema.Struct({ type: Schema.Literal("beacon_list") })
export const RotateKeyRequest = Schema.Struct({
  type: Schema.Literal("rotate_key"),
  node_id: NodeId,
  new_public_key: PublicKeyB64,
  ...signed
})

export const RegistryRequest = Schema.Union([
  RegisterRequest,
  HeartbeatRequest,
  LookupRequest,
  ResolveRequest,
  SetHostnameRequest,
  ResolveHostnameRequest,
  SetVisibilityRequest,
  SetTagsRequest,
  DeregisterRequest,
  ReportTrustRequest,
  RevokeTrustRequest,
  RequestHandshakeRequest,
  PollHandshakesRequest,
  RespondHandshakeRequest,
  PunchRequest,
  BeaconRegisterRequest,
  BeaconListRequest,
  RotateKeyRequest
])
export type RegistryRequest = typeof RegistryRequest.Type
export type RegistryRequestType = RegistryRequest["type"]

// ---------------------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------------------

export const RegisterOk = Schema.Struct({
  type: Schema.Literal("register_ok"),
  node_id: NodeId,
  network_id: NetworkId,
  address: Schema.String,
  public_key: PublicKeyB64,
  hostname: Schema.optionalKey(Schema.String),
  hostname_error: Schema.optionalKey(Schema.String),
  observed_addr: Schema.optionalKey(Schema.String)
})
export const HeartbeatOk = Schema.Struct({
  type: Schema.Literal("heartbeat_ok"),
  time: UnixSeconds,
  key_expiry_warning: Schema.optionalKey(Schema.Boolean)
})
export const LookupOk = Schema.Struct({
  type: Schema.Literal("lookup_ok"),
  node_id: NodeId,
  address: Schema.String,
  networks: Schema.Array(NetworkId),
  public_key: PublicKeyB64,
  public: Schema.Boolean,
  polo_score: Schema.optionalKey(Schema.Number),
  hostname: Schema.optionalKey(Schema.String),
  tags: Schema.optionalKey(Schema.Array(Schema.String)),
  task_exec: Schema.optionalKey(Schema.Boolean),
  real_addr: Schema.optionalKey(Schema.String),
  relay_only: Schema.optionalKey(Schema.Boolean),
  last_seen_unix: Schema.optionalKey(UnixSeconds),
  key_generation: Schema.optionalKey(Schema.Number)
})
export const ResolveOk = Schema.Struct({
  type: Schema.Literal("resolve_ok"),
  node_id: NodeId,
  real_addr: Schema.String,
  lan_addrs: Schema.optionalKey(Schema.Array(Schema.String)),
  relay_only: Schema.optionalKey(Schema.Boolean),
  key_age_days: Schema.optionalKey(Schema.Number)
})
export const SetHostnameOk = Schema.Struct({
  type: Schema.Literal("set_hostname_ok"),
  node_id: NodeId,
  hostname: Schema.String
})
export const ResolveHostnameOk = Schema.Struct({
  type: Schema.Literal("resolve_hostname_ok"),
  node_id: NodeId,
  address: Schema.String,
  public: Schema.optionalKey(Schema.Boolean),
  hostname: Schema.optionalKey(Schema.String)
})
export const SetVisibilityOk = Schema.Struct({
  type: Schema.Literal("set_visibility_ok"),
  node_id: NodeId,
  visibility: Schema.Literals(["public", "private"])
})
export const SetTagsOk = Schema.Struct({
  type: Schema.Literal("set_tags_ok"),
  node_id: NodeId,
  tags: Schema.Array(Schema.String)
})
export const DeregisterOk = Schema.Struct({ type: Schema.Literal("deregister_ok") })
export const ReportTrustOk = Schema.Struct({ type: Schema.Literal("report_trust_ok") })
export const RevokeTrustOk = Schema.Struct({ type: Schema.Literal("revoke_trust_ok") })
export const RequestHandshakeOk = Schema.Struct({ type: Schema.Literal("request_handshake_ok") })
export const PollHandshakesOk = Schema.Struct({
  type: Schema.Literal("poll_handshakes_ok"),
  requests: Schema.Array(Schema.Struct({
    from_node_id: NodeId,
    justification: Schema.String,
    timestamp: Schema.optionalKey(UnixSeconds)
  })),
  responses: Schema.Array(Schema.Struct({
    from_node_id: NodeId,
    accept: Schema.Boolean,
    timestamp: Schema.optionalKey(UnixSeconds)
  }))
})
export const RespondHandshakeOk = Schema.Struct({ type: Schema.Literal("respond_handshake_ok") })
export const PunchOk = Schema.Struct({
  type: Schema.Literal("punch_ok"),
  node_a: NodeId,
  node_a_addr: Schema.String,
  node_b: NodeId,
  node_b_addr: Schema.String
})
export const BeaconRegisterOk = Schema.Struct({ type: Schema.Literal("beacon_register_ok"), beacon_id: NodeId })
export const BeaconListOk = Schema.Struct({
  type: Schema.Literal("beacon_list_ok"),
  beacons: Schema.Array(Schema.Struct({ id: NodeId, addr: Schema.String }))
})
export const RotateKeyOk = Schema.Struct({
  type: Schema.Literal("rotate_key_ok"),
  node_id: NodeId,
  address: Schema.String,
  public_key: PublicKeyB64
})
export const ErrorReply = Schema.Struct({
  type: Schema.Literal("error"),
  error: Schema.String,
  code: Schema.optionalKey(RegistryErrorCode)
})

export const RegistryReply = Schema.Union([
  RegisterOk,
  HeartbeatOk,
  LookupOk,
  ResolveOk,
  SetHostnameOk,
  ResolveHostnameOk,
  SetVisibilityOk,
  SetTagsOk,
  DeregisterOk,
  ReportTrustOk,
  RevokeTrustOk,
  RequestHandshakeOk,
  PollHandshakesOk,
  RespondHandshakeOk,
  PunchOk,
  BeaconRegisterOk,
  BeaconListOk,
  RotateKeyOk,
  ErrorReply
])
export type RegistryReply = typeof RegistryReply.Type
export type RegistryReplyType = RegistryReply["type"]

// ---------------------------------------------------------------------------------------------------------
// Challenges (the ASCII strings the `signature` fields sign; IDs in decimal)
// ---------------------------------------------------------------------------------------------------------

export const registerChallenge = (listenAddr: string, publicKey: string): string => `register:${listenAddr}:${publicKey}`
export const heartbeatChallenge = (nodeId: number): string => `heartbeat:${nodeId}`
export const resolveChallenge = (requesterId: number, targetId: number): string => `resolve:${requesterId}:${targetId}`
export const reportTrustChallenge = (nodeId: number, peerId: number): string => `report_trust:${nodeId}:${peerId}`
export const revokeTrustChallenge = (nodeId: number, peerId: number): string => `revoke_trust:${nodeId}:${peerId}`
export const pollHandshakesChallenge = (nodeId: number): string => `poll_handshakes:${nodeId}`
/** §5: approvals and rejections of relayed handshakes, signed by the responder. */
export const respondHandshakeChallenge = (me: number, peer: number): string => `respond:${me}:${peer}`
export const punchChallenge = (nodeA: number, nodeB: number): string => `punch:${nodeA}:${nodeB}`
export const setVisibilityChallenge = (nodeId: number): string => `set_visibility:${nodeId}`
export const setHostnameChallenge = (nodeId: number): string => `set_hostname:${nodeId}`
export const setTagsChallenge = (nodeId: number): string => `set_tags:${nodeId}`
export const deregisterChallenge = (nodeId: number): string => `deregister:${nodeId}`
export const rotateKeyChallenge = (nodeId: number): string => `rotate:${nodeId}`
/**
 * §5: the trust handshake signature, carried both by port-444 trust messages and by a relayed
 * `request_handshake` (which forwards the same signature). Not message-specific: replay defence is elsewhere.
 */
export const handshakeChallenge = (sender: number, receiver: number): string => `handshake:${sender}:${receiver}`

/** The string `request.signature` must sign, or `undefined` for requests that carry no signature. */
export const registryChallenge = (request: RegistryRequest): string | undefined => {
  switch (request.type) {
    case "register":
      return registerChallenge(request.listen_addr, request.public_key)
    case "heartbeat":
      return heartbeatChallenge(request.node_id)
    case "resolve":
      return resolveChallenge(request.requester_id, request.node_id)
    case "set_hostname":
      return setHostnameChallenge(request.node_id)
    case "set_visibility":
      return setVisibilityChallenge(request.node_id)
    case "set_tags":
      return setTagsChallenge(request.node_id)
    case "deregister":
      return deregisterChallenge(request.node_id)
    case "report_trust":
      return reportTrustChallenge(request.node_id, request.peer_id)
    case "revoke_trust":
      return revokeTrustChallenge(request.node_id, request.peer_id)
    case "request_handshake":
      return handshakeChallenge(request.from_node_id, request.to_node_id)
    case "poll_handshakes":
      return pollHandshakesChallenge(request.node_id)
    case "respond_handshake":
      return respondHandshakeChallenge(request.node_id, request.peer_id)
    case "punch":
      return punchChallenge(request.node_a, request.node_b)
    case "rotate_key":
      return rotateKeyChallenge(request.node_id)
    case "lookup":
    case "resolve_hostname":
    case "beacon_register":
    case "beacon_list":
      return undefined
  }
}

// ---------------------------------------------------------------------------------------------------------
// Decoding and encoding
// ---------------------------------------------------------------------------------------------------------

const formatIssue = SchemaIssue.makeFormatterStandardSchemaV1()

/**
 * A schema failure as a `DecodeError` whose `frame` is `base` plus the path of the offending field
 * (`registry set_tags.tags.1`), so both people and `registryErrorCodeOf` can tell which field broke.
 */
export const fromSchemaError = (base: string, error: Schema.SchemaError): DecodeError => {
  const first = formatIssue(error.issue).issues[0]
  const path = first?.path?.map(String).join(".") ?? ""
  return new DecodeError({
    frame: path === "" ? base : `${base}.${path}`,
    reason: "invalid",
    detail: first?.message ?? error.message
  })
}

interface TaggedUnion<A extends { readonly type: string }> {
  readonly members: ReadonlyArray<Schema.Codec<unknown, unknown> & { readonly fields: { readonly type: { readonly literal: string } } }>
  readonly Type: A
}

/**
 * Decoder/encoder pair for a union of structs tagged by `type`: the tag picks the member up front, so an unknown
 * tag is `bad_magic` and a bad field is reported against that member alone.
 */
const taggedCodec = <A extends { readonly type: string }>(what: string, union: TaggedUnion<A>) => {
  const byType = new Map(union.members.map((member) => [member.fields.type.literal, member]))
  const decode = (json: unknown): Result.Result<A, DecodeError> => {
    const type = typeof json === "object" && json !== null && !Array.isArray(json)
      ? (json as { readonly type?: unknown }).type
      : undefined
    if (typeof type !== "string") return decodeFail(`registry ${what}`, "invalid", "expected a JSON object with a string `type`")
    const member = byType.get(type)
    if (member === undefined) return decodeFail(`registry ${what}`, "bad_magic", `unknown ${what} type ${JSON.stringify(type)}`)
    return Result.mapError(
      Schema.decodeUnknownResult(member)(json) as Result.Result<A, Schema.SchemaError>,
      (error) => fromSchemaError(`registry ${type}`, error)
    )
  }
  const encode = (message: A): Result.Result<Uint8Array, DecodeError> => {
    const member = byType.get(message.type)
    if (member === undefined) return decodeFail(`registry ${what}`, "bad_magic", `unknown ${what} type ${JSON.stringify(message.type)}`)
    return Result.flatMap(
      Result.mapError(Schema.encodeUnknownResult(member)(message), (error) => fromSchemaError(`registry ${message.type}`, error)),
      (json) => Result.mapError(encodeJsonFrame(json), (error) => new DecodeError({ frame: `registry ${message.type}`, reason: error.reason, detail: error.detail }))
    )
  }
  return { decode, encode }
}

const requests = taggedCodec<RegistryRequest>("request", RegistryRequest)
const replies = taggedCodec<RegistryReply>("reply", RegistryReply)

/** Validates a parsed JSON value as a registry request. */
export const decodeRegistryRequest = requests.decode
/** Validates a parsed JSON value as a registry reply (success or error). */
export const decodeRegistryReply = replies.decode
/** Validates `request` and frames it (length prefix + UTF-8 JSON) for one socket write. */
export const encodeRegistryRequest = requests.encode
/** Validates `reply` and frames it (length prefix + UTF-8 JSON) for one socket write. */
export const encodeRegistryReply = replies.encode

/** A body from the length-prefixed splitter, parsed and validated as a request. */
export const decodeRegistryRequestBody = (body: Uint8Array): Result.Result<RegistryRequest, DecodeError> =>
  Result.flatMap(decodeJsonObjectBody(body, "registry request"), decodeRegistryRequest)

/** A body from the length-prefixed splitter, parsed and validated as a reply. */
export const decodeRegistryReplyBody = (body: Uint8Array): Result.Result<RegistryReply, DecodeError> =>
  Result.flatMap(decodeJsonObjectBody(body, "registry reply"), decodeRegistryReply)

/** The error code a registry answers a request that failed to decode with. */
export const registryErrorCodeOf = (error: DecodeError): RegistryErrorCode => {
  if (error.reason === "bad_magic") return "unknown_type"
  if (error.reason === "oversize") return "too_large"
  const field = /^registry [a-z_]+\.([a-z_]+)/.exec(error.frame)?.[1]
  switch (field) {
    case "hostname":
      return "invalid_hostname"
    case "tags":
      return "invalid_tags"
    case "signature":
      return "invalid_signature"
    default:
      return "bad_request"
  }
}

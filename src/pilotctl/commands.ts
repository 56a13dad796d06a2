/**
 * Every `pilotctl` command, described once: its arguments, flags, output fields and error codes, and what it
 * does. `main.ts` builds the command-line parser from this table and `context` prints the same table, so the
 * machine-readable catalogue cannot drift from what the binary accepts.
 */
import { type Duration, Effect } from "effect"
import type { IpcMessage } from "../protocol/ipc.ts"
import { parseHostPort } from "../platform/host-port.ts"
import { makeRegistryClient } from "../registry/client.ts"
import * as daemon from "./daemon-control.ts"
import { ctlError, type CtlError, ERROR_CODES, type ErrorCode, Reported } from "./errors.ts"
import { ipcJson, ipcRequest } from "./ipc-client.ts"
import * as mailbox from "./mailbox.ts"
import * as streams from "./streams.ts"

export interface ParamSpec {
  readonly name: string
  readonly kind: "string" | "int" | "boolean"
  readonly description: string
  /** Arguments only: may be left out. */
  readonly optional?: true
  /** Arguments only: takes every remaining word (always last). */
  readonly variadic?: true
}

/** What a command handler sees: global settings plus its own arguments and flags (absent ones `undefined`). */
export interface Invocation {
  readonly socket: string
  readonly registry: string
  readonly timeout: Duration.Input
  /** Whether `--timeout` was given on the command line (not defaulted); `subscribe` streams when it was not. */
  readonly timeoutExplicit?: boolean
  readonly params: { readonly [name: string]: unknown }
}

/** A handler result that prints nothing (`daemon status --check`). */
export const SILENT = Symbol.for("pilotctl/silent")

export interface CommandSpec {
  /** `["daemon", "start"]` for a subcommand. */
  readonly path: ReadonlyArray<string>
  readonly description: string
  readonly args: ReadonlyArray<ParamSpec>
  readonly flags: ReadonlyArray<ParamSpec>
  /** Top-level fields of `data` on success. */
  readonly returns: ReadonlyArray<string>
  readonly errors: ReadonlyArray<ErrorCode>
  readonly run: (invocation: Invocation) => Effect.Effect<unknown, CtlError | Reported>
}

// ---- parameter helpers --------------------------------------------------------------------------------------

const arg = (name: string, description: string, extra: Partial<ParamSpec> = {}): ParamSpec => ({ name, kind: "string", description, ...extra })
const stringFlag = (name: string, description: string): ParamSpec => ({ name, kind: "string", description })
const intFlag = (name: string, description: string): ParamSpec => ({ name, kind: "int", description })
const intArg = (name: string, description: string, extra: Partial<ParamSpec> = {}): ParamSpec => ({ name, kind: "int", description, ...extra })
const boolFlag = (name: string, description: string): ParamSpec => ({ name, kind: "boolean", description })

const text = (inv: Invocation, name: string): string | undefined => {
  const value = inv.params[name]
  return typeof value === "string" ? value : undefined
}

/** A node given as a decimal id or as a `N:NNNN.HHHH.LLLL` address. */
export const parseNode = (input: string): Effect.Effect<number, CtlError> => {
  const target = streams.literalTarget(input)
  return target !== undefined
    ? Effect.succeed(target.node)
    : Effect.fail(ctlError("invalid_argument", `"${input}" is neither a node id nor an address`, "give a node id (e.g. 42) or an address (0:0000.0000.002A)"))
}

/** An int parameter, its default when absent; outside `[min, max]` is an invalid_argument. */
const intParam = (inv: Invocation, name: string, fallback: number, min: number, max: number): Effect.Effect<number, CtlError> => {
  const value = inv.params[name]
  const n = typeof value === "number" ? value : fallback
  return Number.isInteger(n) && n >= min && n <= max
    ? Effect.succeed(n)
    : Effect.fail(ctlError("invalid_argument", `${name} must be an integer from ${min} to ${max}, not ${n}`))
}

const portParam = (inv: Invocation, name: string, fallback: number) => intParam(inv, name, fallback, 0, 0xffff)

const nodeArg = (inv: Invocation, name: string) => parseNode(text(inv, name) ?? "")

// ---- IPC-backed commands --------------------------------------------------------------------------------------

type JsonReplyCmd = Extract<IpcMessage, { readonly json: unknown }>["cmd"]

/** Common errors of every command that talks to the daemon. */
const DAEMON_ERRORS: ReadonlyArray<ErrorCode> = ["not_running", "connection_failed", "timeout", "internal"]

const ipcCommand = (
  path: ReadonlyArray<string>,
  description: string,
  params: { readonly args?: ReadonlyArray<ParamSpec>; readonly returns: ReadonlyArray<string>; readonly errors?: ReadonlyArray<ErrorCode> },
  request: (inv: Invocation) => Effect.Effect<IpcMessage, CtlError>,
  reply: JsonReplyCmd
): CommandSpec => ({
  path,
  description,
  args: params.args ?? [],
  flags: [],
  returns: params.returns,
  errors: [...(params.errors ?? []), ...DAEMON_ERRORS],
  run: (inv) => Effect.flatMap(request(inv), (message) => ipcJson(inv.socket, message, reply, inv.timeout))
})

const info = (inv: Invocation) => Effect.map(ipcJson(inv.socket, { cmd: "Info" }, "InfoOK", inv.timeout), (json) => json as { readonly [key: string]: unknown })

const listFromInfo = (field: string, as: string) => (inv: Invocation) =>
  Effect.map(info(inv), (json) => {
    const items = Array.isArray(json[field]) ? json[field] as ReadonlyArray<unknown> : []
    return { [as]: items, total: items.length }
  })

// ---- the table ------------------------------------------------------------------------------------------------

const DAEMON_FLAGS: ReadonlyArray<ParamSpec> = [
  stringFlag("listen", "UDP tunnel address (default :0)"),
  stringFlag("identity", "identity file (default ~/.pilot/identity.json)"),
  stringFlag("hostname", "hostname to register"),
  stringFlag("endpoint", "endpoint to register"),
  stringFlag("http", "address for /health, /ready and /metrics"),
  stringFlag("beacon", "beacon address"),
  boolFlag("public", "make this node public"),
  boolFlag("trust-auto-approve", "approve every trust request"),
  stringFlag("log-level", "trace|debug|info|warn|error"),
  stringFlag("log-format", "text|json"),
  // Not `--config`: that global flag names pilotctl's own config file.
  stringFlag("daemon-config", "JSON file of pilot-daemon settings (passed to it as --config)"),
  boolFlag("foreground", "run the daemon in this process's place instead of in the background")
]

/** The daemon flags given, as pilot-daemon arguments (`--registry` from the global setting). */
const daemonArgs = (inv: Invocation): ReadonlyArray<string> => [
  "--registry",
  inv.registry,
  ...DAEMON_FLAGS.flatMap((flag) => {
    const value = inv.params[flag.name]
    if (flag.name === "foreground") return []
    const name = flag.name === "daemon-config" ? "config" : flag.name
    if (flag.kind === "boolean") return value === true ? [`--${name}`] : []
    return value === undefined ? [] : [`--${name}`, String(value)]
  })
]

const lookup = (inv: Invocation) =>
  Effect.gen(function*() {
    const nodeId = yield* nodeArg(inv, "node_id")
    const at = parseHostPort(inv.registry)
    if (typeof at === "string") return yield* ctlError("invalid_argument", `--registry: ${at}`)
    const client = yield* makeRegistryClient({ host: at.host ?? "127.0.0.1", port: at.port, callTimeout: inv.timeout })
    return yield* client.call({ type: "lookup", node_id: nodeId }).pipe(
      Effect.mapError((error) =>
        error._tag === "RegistryRejected"
          ? ctlError(error.code === "node_not_found" ? "not_found" : "internal", error.message)
          : ctlError(error.code === "timeout" ? "timeout" : "connection_failed", error.message, error.hint))
    )
  }).pipe(Effect.scoped)

export const COMMANDS: ReadonlyArray<CommandSpec> = [
  {
    path: ["context"],
    description: "machine-readable catalogue of every command: arguments, flags, output fields, error codes",
    args: [],
    flags: [],
    returns: ["commands", "global_flags", "error_codes"],
    errors: [],
    run: () => Effect.sync(() => catalogue())
  },
  ipcCommand(["health"], "daemon health (local only, never touches the registry)", { returns: ["status", "uptime_seconds", "connections", "peers"] }, () => Effect.succeed({ cmd: "Health" }), "HealthOK"),
  ipcCommand(["info"], "everything the daemon knows about itself", { returns: ["node_id", "address", "hostname", "peer_list", "conn_list"] }, () => Effect.succeed({ cmd: "Info" }), "InfoOK"),
  {
    path: ["peers"],
    description: "known peers (from info)",
    args: [],
    flags: [],
    returns: ["peers", "total"],
    errors: DAEMON_ERRORS,
    run: listFromInfo("peer_list", "peers")
  },
  {
    path: ["connections"],
    description: "open overlay connections (from info)",
    args: [],
    flags: [],
    returns: ["connections", "total"],
    errors: DAEMON_ERRORS,
    run: listFromInfo("conn_list", "connections")
  },
  {
    path: ["lookup"],
    description: "look a node up in the registry (talks to the registry directly)",
    args: [arg("node_id", "node id or address")],
    flags: [],
    returns: ["node_id", "address", "hostname", "public_key", "public", "tags"],
    errors: ["invalid_argument", "not_found", "connection_failed", "timeout", "internal"],
    run: lookup
  },
  ipcCommand(["set-hostname"], "set this node's hostname", { args: [arg("hostname", "new hostname")], returns: ["hostname"], errors: ["invalid_argument", "already_exists"] }, (inv) => Effect.succeed({ cmd: "SetHostname", hostname: text(inv, "hostname") ?? "" }), "SetHostnameOK"),
  ipcCommand(["clear-hostname"], "remove this node's hostname", { returns: ["hostname"] }, () => Effect.succeed({ cmd: "SetHostname", hostname: "" }), "SetHostnameOK"),
  ipcCommand(["find"], "resolve a hostname to a node", { args: [arg("hostname", "hostname to resolve")], returns: ["node_id", "address"], errors: ["not_found"] }, (inv) => Effect.succeed({ cmd: "ResolveHostname", hostname: text(inv, "hostname") ?? "" }), "ResolveHostnameOK"),
  ipcCommand(["set-public"], "make this node visible to everyone", { returns: ["public"] }, () => Effect.succeed({ cmd: "SetVisibility", public: true }), "SetVisibilityOK"),
  ipcCommand(["set-private"], "make this node visible to trusted peers only", { returns: ["public"] }, () => Effect.succeed({ cmd: "SetVisibility", public: false }), "SetVisibilityOK"),
  ipcCommand(["set-tags"], "replace this node's tags (at most 3)", { args: [arg("tags", "tags", { variadic: true })], returns: ["tags"], errors: ["invalid_argument"] }, (inv) => Effect.succeed({ cmd: "SetTags", tags: (inv.params["tags"] as ReadonlyArray<string> | undefined) ?? [] }), "SetTagsOK"),
  ipcCommand(["clear-tags"], "remove every tag of this node", { returns: ["tags"] }, () => Effect.succeed({ cmd: "SetTags", tags: [] }), "SetTagsOK"),
  ipcCommand(["deregister"], "remove this node from the registry", { returns: ["status"] }, () => Effect.succeed({ cmd: "Deregister" }), "DeregisterOK"),
  // `<node|host>` as in the reference: a hostname is resolved by the daemon first (a private node's too).
  ipcCommand(["handshake"], "ask a node for mutual trust", { args: [arg("node", "node id, address or hostname"), arg("justification", "why you ask", { optional: true })], returns: ["status", "node_id"], errors: ["invalid_argument", "not_found"] }, (inv) => Effect.map(streams.resolveTarget(inv.socket, text(inv, "node") ?? "", inv.timeout), (addr): IpcMessage => ({ cmd: "Handshake", sub: "Send", node: addr.node, justification: text(inv, "justification") ?? "" })), "HandshakeOK"),
  ipcCommand(["pending"], "trust requests waiting for approval", { returns: ["pending"] }, () => Effect.succeed({ cmd: "Handshake", sub: "Pending" }), "HandshakeOK"),
  ipcCommand(["approve"], "approve a pending trust request", { args: [arg("node", "node id or address")], returns: ["status", "node_id"], errors: ["invalid_argument", "not_found"] }, (inv) => Effect.map(nodeArg(inv, "node"), (node): IpcMessage => ({ cmd: "Handshake", sub: "Approve", node })), "HandshakeOK"),
  ipcCommand(["reject"], "reject a pending trust request", { args: [arg("node", "node id or address"), arg("reason", "reason", { optional: true })], returns: ["status", "node_id"], errors: ["invalid_argument", "not_found"] }, (inv) => Effect.map(nodeArg(inv, "node"), (node): IpcMessage => ({ cmd: "Handshake", sub: "Reject", node, reason: text(inv, "reason") ?? "" })), "HandshakeOK"),
  ipcCommand(["trust"], "trusted peers", { returns: ["trusted"] }, () => Effect.succeed({ cmd: "Handshake", sub: "Trusted" }), "HandshakeOK"),
  ipcCommand(["untrust"], "revoke trust in a node", { args: [arg("node", "node id or address")], returns: ["status", "node_id"], errors: ["invalid_argument", "not_found"] }, (inv) => Effect.map(nodeArg(inv, "node"), (node): IpcMessage => ({ cmd: "Handshake", sub: "Revoke", node })), "HandshakeOK"),
  ipcCommand(["prefer-direct"], "reset a peer's path: leave the relay, resolve and punch afresh", { args: [arg("node", "node id or address")], returns: ["node_id", "had_tunnel", "was_relay_active", "was_relay_pinned", "pila_pushed"], errors: ["invalid_argument", "not_running"] }, (inv) => Effect.map(nodeArg(inv, "node"), (node): IpcMessage => ({ cmd: "PreferDirect", node })), "PreferDirectOK"),
  {
    path: ["disconnect"],
    description: "close an overlay connection",
    args: [{ name: "conn_id", kind: "int", description: "connection id (see connections)" }],
    flags: [],
    returns: ["conn_id"],
    errors: ["invalid_argument", "not_found", ...DAEMON_ERRORS],
    run: (inv) =>
      Effect.map(ipcRequest(inv.socket, { cmd: "Close", connId: Number(inv.params["conn_id"]) }, "CloseOK", inv.timeout), (reply) => ({ conn_id: reply.connId }))
  },
  {
    path: ["connect"],
    description: "dial a port of a node, send one message, print the first reply (null if the peer closes or --timeout passes first)",
    args: [arg("target", "node id, address or hostname"), intArg("port", "port (default 1000)", { optional: true })],
    flags: [stringFlag("message", "text to send")],
    returns: ["target", "port", "sent", "response"],
    errors: ["invalid_argument", "not_found", ...DAEMON_ERRORS],
    run: (inv) =>
      Effect.flatMap(portParam(inv, "port", 1000), (port) => streams.connect(inv.socket, text(inv, "target") ?? "", port, text(inv, "message") ?? "", inv.timeout))
  },
  {
    path: ["send"],
    description: "dial a port of a node, send the data, close",
    args: [arg("target", "node id, address or hostname"), intArg("port", "port")],
    flags: [stringFlag("data", "text to send")],
    returns: ["target", "port", "bytes"],
    errors: ["invalid_argument", "not_found", ...DAEMON_ERRORS],
    run: (inv) => Effect.flatMap(portParam(inv, "port", 0), (port) => streams.send(inv.socket, text(inv, "target") ?? "", port, text(inv, "data") ?? "", inv.timeout))
  },
  {
    path: ["recv"],
    description: "bind a port and print what connecting peers send: --count messages (default 1), or what came before --timeout",
    args: [intArg("port", "port to bind")],
    flags: [intFlag("count", "messages to wait for (default 1)")],
    returns: ["messages", "timeout"],
    errors: ["invalid_argument", ...DAEMON_ERRORS],
    run: (inv) =>
      Effect.gen(function*() {
        const port = yield* portParam(inv, "port", 0)
        const count = yield* intParam(inv, "count", 1, 1, 1_000_000)
        return yield* streams.recv(inv.socket, port, count, inv.timeout)
      })
  },
  {
    path: ["ping"],
    description: "round trips to a node's echo service (port 7)",
    args: [arg("target", "node id, address or hostname")],
    flags: [intFlag("count", "pings (default 4)")],
    returns: ["target", "results", "sent", "received", "min_rtt_ms", "avg_rtt_ms", "max_rtt_ms"],
    errors: ["invalid_argument", "not_found", ...DAEMON_ERRORS],
    run: (inv) => Effect.flatMap(intParam(inv, "count", 4, 1, 10_000), (count) => streams.ping(inv.socket, text(inv, "target") ?? "", count, inv.timeout))
  },
  {
    path: ["bench"],
    description: "throughput through a node's echo service (port 7): send size_mb MiB, wait for all of it back",
    args: [arg("target", "node id, address or hostname"), intArg("size_mb", "MiB to send (default 1)", { optional: true })],
    flags: [],
    returns: ["target", "bytes", "send_ms", "total_ms", "send_mbps", "total_mbps"],
    errors: ["invalid_argument", "not_found", ...DAEMON_ERRORS],
    run: (inv) => Effect.flatMap(intParam(inv, "size_mb", 1, 1, 1024), (sizeMb) => streams.bench(inv.socket, text(inv, "target") ?? "", sizeMb, inv.timeout))
  },
  {
    path: ["send-message"],
    description: "send a message to a node's data-exchange service (port 1001); --wait: wait for its ACK (else ack is null)",
    args: [arg("target", "node id, address or hostname")],
    flags: [stringFlag("data", "the message"), stringFlag("type", "text (default), json or binary (the bytes of --data)"), boolFlag("wait", "wait up to --timeout for the ACK; an ERR reply is an error")],
    returns: ["target", "type", "bytes", "ack"],
    errors: ["invalid_argument", "not_found", ...DAEMON_ERRORS],
    run: (inv) =>
      mailbox.sendMessage(inv.socket, text(inv, "target") ?? "", text(inv, "data") ?? "", text(inv, "type") ?? "text", inv.params["wait"] === true, inv.timeout)
  },
  {
    path: ["send-file"],
    description: "send a file (≤ 16 MiB) to a node's data-exchange service (port 1001) and wait for its ACK",
    args: [arg("target", "node id, address or hostname"), arg("path", "file to send")],
    flags: [],
    returns: ["filename", "bytes", "destination", "ack"],
    errors: ["invalid_argument", "not_found", ...DAEMON_ERRORS],
    run: (inv) => mailbox.sendFile(inv.socket, text(inv, "target") ?? "", text(inv, "path") ?? "", inv.timeout)
  },
  {
    path: ["inbox"],
    description: "messages this node received (<data_dir>/inbox); --clear deletes them after listing",
    args: [],
    flags: [boolFlag("clear", "delete the listed messages")],
    returns: ["messages", "total", "dir"],
    errors: DAEMON_ERRORS,
    run: (inv) => mailbox.inbox(inv.socket, inv.params["clear"] === true, inv.timeout)
  },
  {
    path: ["received"],
    description: "files this node received (<data_dir>/received); --clear deletes them after listing",
    args: [],
    flags: [boolFlag("clear", "delete the listed files")],
    returns: ["files", "total", "dir"],
    errors: DAEMON_ERRORS,
    run: (inv) => mailbox.received(inv.socket, inv.params["clear"] === true, inv.timeout)
  },
  {
    path: ["subscribe"],
    description: "subscribe to a topic (* = all) of a node's event stream (port 1002): --count events or what came before --timeout; with neither, one NDJSON line per event until the node closes",
    args: [arg("target", "node id, address or hostname"), arg("topic", "topic, or * for every topic")],
    flags: [intFlag("count", "events to wait for")],
    returns: ["target", "topic", "events", "total", "timeout"],
    errors: ["invalid_argument", "not_found", ...DAEMON_ERRORS],
    run: (inv) =>
      Effect.gen(function*() {
        const count = inv.params["count"] === undefined ? undefined : yield* intParam(inv, "count", 1, 1, 1_000_000)
        const explicit = inv.timeoutExplicit ?? process.argv.some((a) => a === "--timeout" || a.startsWith("--timeout="))
        // --count alone is bounded by the default --timeout, as recv is.
        const wait = explicit || count !== undefined ? inv.timeout : undefined
        const result = yield* mailbox.subscribe(inv.socket, text(inv, "target") ?? "", text(inv, "topic") ?? "", { count, wait }, inv.timeout)
        return result.streamed ? SILENT : { target: result.target, topic: result.topic, events: result.events, total: result.total, timeout: result.timeout }
      })
  },
  {
    path: ["publish"],
    description: "publish one event on a topic of a node's event stream (port 1002)",
    args: [arg("target", "node id, address or hostname"), arg("topic", "topic")],
    flags: [stringFlag("data", "event payload")],
    returns: ["target", "topic", "bytes"],
    errors: ["invalid_argument", "not_found", ...DAEMON_ERRORS],
    run: (inv) => mailbox.publish(inv.socket, text(inv, "target") ?? "", text(inv, "topic") ?? "", text(inv, "data") ?? "", inv.timeout)
  },
  {
    path: ["daemon", "start"],
    description: "start pilot-daemon in the background; returns once its IPC socket answers (≤ 15 s). Pid file <socket>.pid, log <socket>.log",
    args: [],
    flags: DAEMON_FLAGS,
    returns: ["pid", "socket", "pid_file", "log_file", "node_id", "address", "hostname"],
    errors: ["already_exists", "timeout", "internal"],
    run: (inv) => {
      const options = { socketPath: inv.socket, daemonArgs: daemonArgs(inv), timeout: inv.timeout }
      return inv.params["foreground"] === true
        ? Effect.flatMap(daemon.runForeground(options), (code) => code === 0 ? Effect.succeed({ exit_code: code }) : Effect.fail(ctlError("internal", `pilot-daemon exited with code ${code}`)))
        : daemon.startBackground(options)
    }
  },
  {
    path: ["daemon", "stop"],
    description: "stop the daemon recorded in <socket>.pid: SIGTERM, wait for exit, SIGKILL after 25 s",
    args: [],
    flags: [],
    returns: ["pid", "forced"],
    errors: ["not_running", "internal"],
    run: (inv) => daemon.stop(inv.socket)
  },
  {
    path: ["daemon", "status"],
    description: "is the daemon answering on its socket? --check: print nothing, exit 0 if running, 1 if not",
    args: [],
    flags: [boolFlag("check", "silent; the exit code is the answer")],
    returns: ["running", "pid", "socket", "health"],
    errors: DAEMON_ERRORS,
    run: (inv) =>
      inv.params["check"] === true
        ? daemon.status(inv.socket, inv.timeout).pipe(Effect.as(SILENT), Effect.mapError(() => new Reported()))
        : daemon.status(inv.socket, inv.timeout)
  }
]

export const GLOBAL_FLAGS: ReadonlyArray<ParamSpec> = [
  boolFlag("json", "machine-readable output: {\"status\":\"ok\",\"data\":…} on stdout, or an error envelope on stderr"),
  stringFlag("socket", "daemon IPC socket (env PILOT_SOCKET; default /tmp/pilot.sock)"),
  stringFlag("registry", "registry address (env PILOT_REGISTRY; default 127.0.0.1:9000)"),
  stringFlag("timeout", "per-request deadline, Go syntax: 500ms, 30s, 2m (default 30s); recv: how long to wait for messages"),
  stringFlag("config", "pilotctl config file of defaults for socket, registry, timeout (default ~/.pilot/config.json if it exists)")
]

const describeParam = (param: ParamSpec) => ({
  name: param.name,
  type: param.kind,
  description: param.description,
  ...(param.optional === true ? { optional: true } : {}),
  ...(param.variadic === true ? { variadic: true } : {})
})

/** The `context` output: this table, without the handlers. */
const catalogue = () => ({
  commands: COMMANDS.map((spec) => ({
    name: spec.path.join(" "),
    description: spec.description,
    arguments: spec.args.map(describeParam),
    flags: spec.flags.map(describeParam),
    returns: spec.returns,
    errors: spec.errors
  })),
  global_flags: GLOBAL_FLAGS.map(describeParam),
  error_codes: ERROR_CODES,
  exit_codes: { ok: 0, error: 1, usage: 2 }
})

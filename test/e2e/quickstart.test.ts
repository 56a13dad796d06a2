/**
 * The README's quick start, run word for word as child processes: `npm start` (rendezvous + alice's daemon),
 * a second daemon (bob) joining, alice asking bob for trust, a message with its ACK, and bob's inbox — then
 * SIGTERM to both long-running commands: exit 0, socket files gone, identities, trust and the registry's
 * snapshot on disk.
 *
 * The commands use the defaults (registry 127.0.0.1:9000, beacon :9001, sockets /tmp/pilot.sock and
 * /tmp/bob.sock, state in ~/.pilot). To run them unchanged without touching (or being disturbed by) anything
 * else on the machine, every command runs inside one fresh network namespace (its own loopback: ports
 * 9000/9001 are free) and mount namespace whose /tmp is a fresh directory of the test, with HOME=/tmp/home:
 * no other registry, daemon, socket file or ~/.pilot/config.json can interfere, and concurrent runs cannot
 * collide. That needs root and util-linux `unshare`/`nsenter`; elsewhere the test is skipped.
 *
 * How a command is run: `npm …` through the system's npm, as typed (npm forwards SIGTERM to the script,
 * which `exec`s Node); `npx <bin> …` as what npx runs: the package's `bin` entry file on the project's Node.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { formatAddr } from "../../src/protocol/address.ts"
import { cleanEnv, DAEMON_DEADLINE, repoRoot, runCommand, startCommand } from "./e2e-kit.ts"

/** The README's five commands (README.md "Quick start", from /tmp/doc-quickstart.md), in order. */
const QUICKSTART_COMMANDS = [
  "npm start -- --hostname alice",
  "npx pilot-daemon --socket /tmp/bob.sock --identity /tmp/bob/identity.json --hostname bob --trust-auto-approve",
  "npx pilotctl handshake bob",
  "npx pilotctl send-message bob --data hello --wait",
  "npx pilotctl --socket /tmp/bob.sock inbox"
] as const

const PLANE_RUNNING = /message="data plane running".* node_id=(\d+)/

/** The quick start's own shutdown deadline (src/quickstart/main.ts). */
const QUICKSTART_DEADLINE = "30 seconds"

const namespacesAvailable = (): boolean => {
  if (process.getuid?.() !== 0) return false
  const probe = spawnSync("unshare", ["--net", "--mount", "--", "nsenter", "--version"], { encoding: "utf8" })
  return probe.status === 0
}

const bins = (JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8")) as { readonly bin: Readonly<Record<string, string>> }).bin

/** One README line as the argv that runs it (see the module comment). */
const argvOf = (line: string): ReadonlyArray<string> => {
  const words = line.split(" ")
  if (words[0] === "npm") return words
  assert.strictEqual(words[0], "npx", line)
  const entry = bins[words[1]!]
  assert.isString(entry, `package.json has a bin entry "${words[1]}"`)
  return [process.execPath, path.join(repoRoot, entry!), ...words.slice(2)]
}

/** A scratch /tmp and a holder process whose network and mount namespaces every command joins. */
const isolatedMachine = Effect.gen(function*() {
  const scratch = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "pf-quickstart-"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )
  const hostTmp = path.join(scratch, "tmp")
  fs.mkdirSync(path.join(hostTmp, "home"), { recursive: true, mode: 0o700 })
  fs.chmodSync(hostTmp, 0o1777)
  // A checkout under /tmp (CI may clone there) would vanish under the scratch /tmp: bind it back at its own
  // path inside the scratch directory first, and cover /tmp recursively so that mount comes along.
  const repoInTmp = path.relative("/tmp", repoRoot)
  const keepRepo = repoInTmp.startsWith("..") || path.isAbsolute(repoInTmp) ? "" : repoInTmp
  if (keepRepo !== "") fs.mkdirSync(path.join(hostTmp, keepRepo), { recursive: true })
  const holder = yield* startCommand([
    "unshare", "--net", "--mount", "--", "sh", "-c",
    "ip link set lo up && if [ -n \"$3\" ]; then mount --bind \"$2\" \"$1/$3\"; fi && mount --rbind \"$1\" /tmp && echo ready && exec sleep 3600",
    "sh", hostTmp, repoRoot, keepRepo
  ])
  yield* holder.waitForLine(/^ready$/, "10 seconds")
  const enter = (argv: ReadonlyArray<string>) => ["nsenter", `--target=${holder.pid}`, "--net", "--mount", `--wd=${repoRoot}`, "--", ...argv]
  const env = cleanEnv({ HOME: "/tmp/home" })
  return {
    /** Where the namespace's /tmp is, seen from here. */
    hostTmp,
    start: (line: string) => startCommand(enter(argvOf(line)), env),
    run: (line: string) => runCommand(enter(argvOf(line)), env)
  }
})

const json = (text: string) => JSON.parse(text) as Record<string, unknown>

describe.skipIf(!namespacesAvailable())("the README quick start (skipped without root, unshare and nsenter)", () => {
  it.live("npm start, a second daemon, handshake, send-message --wait, inbox; SIGTERM stops both cleanly", () =>
    Effect.gen(function*() {
      const machine = yield* isolatedMachine
      const [start, joinBob, handshake, sendMessage, inbox] = QUICKSTART_COMMANDS

      const alice = yield* machine.start(start)
      const aliceId = Number((yield* alice.waitForLine(PLANE_RUNNING, "60 seconds"))[1])
      const bob = yield* machine.start(joinBob)
      const bobId = Number((yield* bob.waitForLine(PLANE_RUNNING, "60 seconds"))[1])

      const asked = yield* machine.run(handshake)
      assert.strictEqual(asked.code, 0, asked.stderr)
      assert.deepStrictEqual(json(asked.stdout), { status: "sent", node_id: bobId })

      const sent = yield* machine.run(sendMessage)
      assert.strictEqual(sent.code, 0, sent.stderr)
      assert.deepStrictEqual(json(sent.stdout), { target: formatAddr({ network: 0, node: bobId }), type: "text", bytes: 5, ack: "ACK TEXT 5 bytes" })

      const read = yield* machine.run(inbox)
      assert.strictEqual(read.code, 0, read.stderr)
      const messages = json(read.stdout)["messages"] as ReadonlyArray<Record<string, unknown>>
      assert.deepStrictEqual(messages.map((m) => [m["type"], m["from"], m["data"]]), [["text", formatAddr({ network: 0, node: aliceId }), "hello"]])

      // Ctrl-C / SIGTERM: bob's daemon, then npm (which forwards the signal to the quick start).
      assert.strictEqual(yield* bob.stop("SIGTERM", DAEMON_DEADLINE), 0)
      assert.strictEqual(yield* alice.stop("SIGTERM", QUICKSTART_DEADLINE), 0)
      assert.isTrue(alice.lines.some((line) => /message="deregistered node \d+"/.test(line)), "alice deregistered before the registry closed")
      assert.isFalse(fs.existsSync(path.join(machine.hostTmp, "pilot.sock")))
      assert.isFalse(fs.existsSync(path.join(machine.hostTmp, "bob.sock")))
      const pilotHome = path.join(machine.hostTmp, "home", ".pilot")
      assert.strictEqual(fs.statSync(pilotHome).mode & 0o777, 0o700)
      assert.sameMembers(fs.readdirSync(pilotHome).filter((f) => f.endsWith(".json")), ["identity.json", "registry.json", "trust.json"])
      const trustedIds = (file: string) =>
        (JSON.parse(fs.readFileSync(file, "utf8")) as { readonly trusted: ReadonlyArray<{ readonly node_id: number }> }).trusted.map((t) => t.node_id)
      assert.deepStrictEqual(trustedIds(path.join(pilotHome, "trust.json")), [bobId])
      assert.deepStrictEqual(trustedIds(path.join(machine.hostTmp, "bob", "trust.json")), [aliceId])
    }), 180_000)
})

/**
 * A small Internet in network namespaces, for NAT traversal tests and benchmarks (needs root, `ip` from
 * iproute2 and `nft` from nftables; `.ci/run` installs both):
 *
 *            h1 (10.0.1.2) ── n1 [NAT] ── pub (203.0.113.1 / .5) ── n2 [NAT] ── h2 (10.0.2.2)
 *                          10.0.1.1  203.0.113.2          203.0.113.6  10.0.2.1
 *
 * `pub` is the public network: registry and beacons run there, and it routes between the two NATs' WAN
 * addresses. `n1` and `n2` are home routers (`homeRouter`): they masquerade their LAN behind their WAN
 * address (Linux conntrack keeps the source port: an endpoint-independent mapping; filtering is address-
 * and-port dependent, so a hole needs a punch from inside). `h1` and `h2` are the hosts the daemons run on. `blockDirect()` drops UDP between the
 * two NATs in `pub` (a firewall, or NATs that cannot be punched), leaving both able to reach `pub` itself.
 *
 * `pub` has two interfaces: servers there must bind `PUBLIC_IP` explicitly. A UDP socket bound to 0.0.0.0
 * answers a host behind n2 from 203.0.113.5 (the interface facing it), which n2's conntrack does not match
 * to the request sent to 203.0.113.1, so the answer is dropped — as on any multi-homed server.
 *
 * Every name carries a random tag, so concurrent runs on one machine never collide; the scope deletes the
 * namespaces (and with them every interface, route and rule).
 */
import { Effect, type Scope } from "effect"
import { spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"

export const PUBLIC_IP = "203.0.113.1"
export const NAT1_WAN_IP = "203.0.113.2"
export const NAT2_WAN_IP = "203.0.113.6"

export interface Internet {
  /** Namespace names. */
  readonly pub: string
  readonly h1: string
  readonly h2: string
  readonly n1: string
  readonly n2: string
  readonly blockDirect: Effect.Effect<void>
  readonly unblockDirect: Effect.Effect<void>
}

const run = (argv: ReadonlyArray<string>, input?: string): void => {
  const result = spawnSync(argv[0]!, argv.slice(1), { input, encoding: "utf8" })
  if (result.status !== 0) throw new Error(`${argv.join(" ")} failed (${result.status}): ${result.stderr}${result.error?.message ?? ""}`)
}

/** Whether this machine can build the topology: root, iproute2, nftables, and namespaces allowed. */
export const netnsAvailable = (): boolean => {
  if (process.getuid?.() !== 0) return false
  const probe = `pfprobe${randomBytes(3).toString("hex")}`
  try {
    run(["nft", "--version"])
    run(["ip", "netns", "add", probe])
    run(["ip", "netns", "del", probe])
    return true
  } catch {
    return false
  }
}

/**
 * A home router: masquerade the LAN behind the WAN address, and drop unsolicited connections to the router
 * itself. The drop matters for hole punching: it happens before conntrack confirms the entry, so a peer's
 * punch that arrives before ours went out leaves no entry behind — otherwise that entry would clash with
 * our own outgoing mapping and make Linux pick a new source port (an endpoint-dependent mapping).
 */
const homeRouter = (wan: string) => `table ip pfnat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "${wan}" masquerade
  }
}
table inet pffw {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "${wan}" ct state new drop
  }
}
`

const BLOCK = `table inet pfblock {
  chain forward_udp {
    type filter hook forward priority filter; policy accept;
    ip saddr ${NAT1_WAN_IP} ip daddr ${NAT2_WAN_IP} meta l4proto udp drop
    ip saddr ${NAT2_WAN_IP} ip daddr ${NAT1_WAN_IP} meta l4proto udp drop
  }
}
`

export const makeInternet: Effect.Effect<Internet, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => {
    const tag = `pf${randomBytes(3).toString("hex")}`
    const ns = { pub: `${tag}-pub`, n1: `${tag}-n1`, n2: `${tag}-n2`, h1: `${tag}-h1`, h2: `${tag}-h2` }
    const inNs = (name: string, ...argv: ReadonlyArray<string>) => run(["ip", "netns", "exec", name, ...argv])
    const ipIn = (name: string, ...argv: ReadonlyArray<string>) => run(["ip", "-n", name, ...argv])
    try {
      for (const name of Object.values(ns)) {
        run(["ip", "netns", "add", name])
        ipIn(name, "link", "set", "lo", "up")
      }
      const link = (a: string, aIf: string, aIp: string, b: string, bIf: string, bIp: string) => {
        ipIn(a, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b)
        ipIn(a, "addr", "add", aIp, "dev", aIf)
        ipIn(b, "addr", "add", bIp, "dev", bIf)
        ipIn(a, "link", "set", aIf, "up")
        ipIn(b, "link", "set", bIf, "up")
      }
      link(ns.pub, "p1", `${PUBLIC_IP}/30`, ns.n1, "wan", `${NAT1_WAN_IP}/30`)
      link(ns.pub, "p2", "203.0.113.5/30", ns.n2, "wan", `${NAT2_WAN_IP}/30`)
      link(ns.n1, "lan", "10.0.1.1/24", ns.h1, "eth", "10.0.1.2/24")
      link(ns.n2, "lan", "10.0.2.1/24", ns.h2, "eth", "10.0.2.2/24")
      ipIn(ns.n1, "route", "add", "default", "via", PUBLIC_IP)
      ipIn(ns.n2, "route", "add", "default", "via", "203.0.113.5")
      ipIn(ns.h1, "route", "add", "default", "via", "10.0.1.1")
      ipIn(ns.h2, "route", "add", "default", "via", "10.0.2.1")
      for (const router of [ns.pub, ns.n1, ns.n2]) inNs(router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
      run(["ip", "netns", "exec", ns.n1, "nft", "-f", "-"], homeRouter("wan"))
      run(["ip", "netns", "exec", ns.n2, "nft", "-f", "-"], homeRouter("wan"))
    } catch (error) {
      for (const name of Object.values(ns)) spawnSync("ip", ["netns", "del", name])
      throw error
    }
    const internet: Internet = {
      ...ns,
      blockDirect: Effect.sync(() => run(["ip", "netns", "exec", ns.pub, "nft", "-f", "-"], BLOCK)),
      unblockDirect: Effect.sync(() => run(["ip", "netns", "exec", ns.pub, "nft", "delete", "table", "inet", "pfblock"]))
    }
    return internet
  }),
  (internet) =>
    Effect.sync(() => {
      for (const name of [internet.h1, internet.h2, internet.n1, internet.n2, internet.pub]) spawnSync("ip", ["netns", "del", name])
    })
)

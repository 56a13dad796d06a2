/**
 * The per-peer table: hard bounds with typed refusals, per-tick retransmit budget, forgetting idle peers,
 * and `RemovePeer` leaving nothing behind for a recycled node ID. Ends with the property test over random
 * input sequences.
 */
import { bytesEqual } from "../../src/crypto/bytes.ts"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  type Action,
  type DecryptEpoch,
  type DecryptFault,
  type KeyExchangeInput,
  MAX_PENDING_PER_PEER,
  type Via
} from "../../src/tunnel/key-exchange.ts"
import { PeerTable, type PeerTableLimits } from "../../src/tunnel/peer-table.ts"
import { dataPacket, decrypted, direct, EP, EP2, KEY_A, KEY_B, keepalive, outbound, pila, RELAY } from "./fixtures.ts"

const SMALL: PeerTableLimits = { maxCryptoPeers: 2, maxSessionlessPeers: 3, maxPendingPeers: 2, maxRetransmitsPerTick: 2 }
const tags = (actions: ReadonlyArray<Action>): Array<string> => actions.map((a) => a._tag)
const NO_SESSION: KeyExchangeInput = { _tag: "NoSession", via: direct() }
const REMOVE: KeyExchangeInput = { _tag: "RemovePeer" }

describe("PeerTable", () => {
  it("crypto table full: a first key is refused before any derivation; known peers still rekey", () => {
    const table = new PeerTable(SMALL)
    expect(tags(table.step(1, pila(KEY_A), 0))).toContain("InstallSession")
    expect(tags(table.step(2, pila(KEY_A), 0))).toContain("InstallSession")
    expect(table.step(3, pila(KEY_A), 0)).toEqual([{ _tag: "RejectTableFull", table: "sessions" }])
    expect(table.get(3)).toBeUndefined()
    expect(table.sessions).toBe(2)
    expect(table.counters.tableFull.sessions).toBe(1)
    expect(tags(table.step(1, pila(KEY_B), 1_000))).toContain("InstallSession")
    table.step(2, REMOVE, 1_000)
    expect(tags(table.step(3, pila(KEY_A), 1_000))).toContain("InstallSession")
  })

  it("peers without a session are bounded: a PILS flood from spoofed senders cannot crowd out sessions", () => {
    const table = new PeerTable(SMALL)
    const refused = Array.from({ length: 100 }, (_, i) => table.step(100 + i, NO_SESSION, 0))
      .filter((actions) => actions.some((a) => a._tag === "RejectTableFull")).length
    expect(refused).toBe(97)
    expect(table.size).toBe(SMALL.maxSessionlessPeers)
    expect(table.counters.tableFull.peers).toBe(97)
    expect(tags(table.step(1, pila(KEY_A), 0))).toContain("InstallSession")
    expect(tags(table.step(2, pila(KEY_A), 0))).toContain("InstallSession")
    expect(table.step(5, outbound(1), 0)).toEqual([{ _tag: "DropPacket", reason: "peer_table_full" }])
    expect(table.counters.packetDrops.peer_table_full).toBe(1)
  })

  it("dropped sessions linger without a session, yet all entries stay within maxCryptoPeers + maxSessionlessPeers", () => {
    const table = new PeerTable(SMALL)
    const installAndDrop = (node: number, at: number) => {
      expect(tags(table.step(node, pila(KEY_A), at))).toContain("InstallSession")
      const id = table.get(node)!.session!.id
      expect(tags(table.step(node, { _tag: "DecryptRejected", session: id, via: direct(), fault: "epochs_exhausted" }, at))).toContain(
        "DropSession"
      )
    }
    installAndDrop(1, 0)
    installAndDrop(2, 0)
    expect(tags(table.step(3, NO_SESSION, 0))).toContain("SendKeyExchange") // third sessionless peer
    expect(table.step(4, NO_SESSION, 0)).toEqual([{ _tag: "RejectTableFull", table: "peers" }])
    installAndDrop(5, 0)
    installAndDrop(6, 0)
    expect(table.size).toBe(SMALL.maxCryptoPeers + SMALL.maxSessionlessPeers)
    expect(table.sessions).toBe(0)
    expect(table.step(7, pila(KEY_A), 0)).toEqual([{ _tag: "RejectTableFull", table: "sessions" }])
    expect(tags(table.step(1, pila(KEY_A), 0))).toContain("InstallSession") // a held peer keeps its slot
  })

  it("queues exist for at most maxPendingPeers peers; a flush on install frees a slot", () => {
    const table = new PeerTable(SMALL)
    table.step(1, outbound(1), 0)
    table.step(2, outbound(2), 0)
    expect(tags(table.step(3, outbound(3), 0))).toEqual(["DropPacket", "SendKeyExchange"])
    expect(table.pendingPeers).toBe(2)
    expect(table.counters.packetDrops.pending_peers_full).toBe(1)
    const install = table.step(1, pila(KEY_A), 100)
    expect(install.at(-1)).toEqual({ _tag: "SendPackets", packets: [new Uint8Array([1])] })
    expect(table.pendingPeers).toBe(1)
    expect(table.step(3, outbound(4), 200)).toEqual([])
    expect(table.get(3)?.pending).toEqual([new Uint8Array([4])])
  })

  it("retransmits are budgeted per tick and the peers served go to the back of the line", () => {
    const table = new PeerTable(SMALL)
    for (const node of [1, 2, 3]) table.step(node, outbound(node), 0)
    const served = (at: number) =>
      table.tick(at).filter((p) => p.actions.some((a) => a._tag === "SendKeyExchange")).map((p) => p.nodeId)
    expect(served(4_000)).toEqual([1, 2])
    expect(served(4_001)).toEqual([3])
    expect(served(8_000)).toEqual([1, 2])
    expect(served(8_000)).toEqual([])
    expect(served(8_001)).toEqual([3])
  })

  it("a peer left with nothing is forgotten once its cooldown and rate stamps have run out", () => {
    const table = new PeerTable(SMALL)
    table.step(1, outbound(1), 0)
    const gaveUp: Array<number> = []
    for (let at = 1_000; at <= 57_000; at += 1_000) {
      for (const { actions } of table.tick(at)) {
        if (actions.some((a) => a._tag === "Emit" && a.event.name === "tunnel.rekey_gave_up")) gaveUp.push(at)
      }
    }
    expect(gaveUp).toEqual([28_000])
    expect(table.counters.pendingDiscarded).toBe(1)
    expect(table.get(1)).toBeDefined() // the 30 s path-reset stamp from 28 s is still in force
    table.tick(58_000)
    expect(table.get(1)).toBeUndefined()
    expect(table.size).toBe(0)
  })

  it("RemovePeer wipes the entry: a recycled node ID inherits no relay flag, cooldown or session", () => {
    const table = new PeerTable(SMALL)
    table.step(7, pila(KEY_A, RELAY), 0)
    table.step(7, { _tag: "DecryptRejected", session: table.get(7)!.session!.id, via: RELAY, fault: "epochs_exhausted" }, 500)
    for (let at = 1_000; at <= 27_000; at += 1_000) table.tick(at) // gives up at 25 s: cooldown until 30 s
    expect(table.get(7)).toMatchObject({ relay: true, session: undefined, cooldownUntilMs: 30_000 })
    expect(table.step(7, outbound(1), 27_000)).toEqual([{ _tag: "DropPacket", reason: "rekey_cooldown" }])

    expect(tags(table.step(7, REMOVE, 27_000))).toEqual([])
    expect(table.get(7)).toBeUndefined()
    expect(table.size).toBe(0)
    expect(table.step(7, outbound(2), 27_000)).toEqual([
      { _tag: "SendKeyExchange", keyRequest: false, path: "direct", reason: "initiate" }
    ])
  })

  it("RemovePeer of an installed peer tells the shell to drop its keys and queued packets", () => {
    const table = new PeerTable(SMALL)
    table.step(4, pila(KEY_A), 0)
    const id = table.get(4)!.session!.id
    expect(table.step(4, REMOVE, 10)).toEqual([{ _tag: "DropSession", session: id, reason: "peer_removed" }])
    expect(table.sessions).toBe(0)
    table.step(4, pila(KEY_A), 20)
    expect(table.get(4)!.session!.id).not.toBe(id) // session ids are never reused
  })
})

// ---------------------------------------------------------------------------------------------------------
// Property: bounds hold and a same-key frame never installs, whatever the sequence of inputs.

const KEYS = [KEY_A, KEY_B, new Uint8Array(32).fill(0xc3)]
const VIAS: ReadonlyArray<Via> = [direct(EP), direct(EP2), RELAY]
// Seven nodes against room for five, more sessionless slots than queue slots: every bound can be reached.
const PROP_LIMITS: PeerTableLimits = { maxCryptoPeers: 2, maxSessionlessPeers: 3, maxPendingPeers: 2, maxRetransmitsPerTick: 2 }

type Spec =
  | { readonly tag: "pila"; readonly key: number; readonly via: number }
  | { readonly tag: "pilk"; readonly known: boolean; readonly key: number; readonly via: number }
  | { readonly tag: "decrypted"; readonly current: boolean; readonly via: number; readonly epoch: DecryptEpoch; readonly src: number }
  | { readonly tag: "rejected"; readonly current: boolean; readonly via: number; readonly fault: DecryptFault }
  | { readonly tag: "noSession"; readonly via: number }
  | { readonly tag: "installFailed"; readonly current: boolean }
  | { readonly tag: "outbound"; readonly count: number }
  | { readonly tag: "restored" }
  | { readonly tag: "remove" }
  | { readonly tag: "tick" }

const index3 = fc.integer({ min: 0, max: 2 })
const arbSpec: fc.Arbitrary<Spec> = fc.oneof(
  { arbitrary: fc.record({ tag: fc.constant("pila" as const), key: index3, via: index3 }), weight: 4 },
  { arbitrary: fc.record({ tag: fc.constant("pilk" as const), known: fc.boolean(), key: index3, via: index3 }), weight: 2 },
  fc.record({
    tag: fc.constant("decrypted" as const),
    current: fc.boolean(),
    via: index3,
    epoch: fc.constantFrom<DecryptEpoch>("newest", "new", "older"),
    src: index3
  }),
  fc.record({
    tag: fc.constant("rejected" as const),
    current: fc.boolean(),
    via: index3,
    fault: fc.constantFrom<DecryptFault>("auth_failed", "replay", "outside_window", "epochs_exhausted")
  }),
  { arbitrary: fc.record({ tag: fc.constant("noSession" as const), via: index3 }), weight: 2 },
  fc.record({ tag: fc.constant("installFailed" as const), current: fc.boolean() }),
  {
    arbitrary: fc.record({ tag: fc.constant("outbound" as const), count: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 80 })) }),
    weight: 3
  },
  fc.constant({ tag: "restored" as const }),
  fc.constant({ tag: "remove" as const }),
  { arbitrary: fc.constant({ tag: "tick" as const }), weight: 3 }
)
// Mostly short steps (duplicates inside the 250 ms debounce, bursts), sometimes long ones (give-ups, expiry).
const arbDelay = fc.oneof(
  { arbitrary: fc.integer({ min: 0, max: 300 }), weight: 3 },
  { arbitrary: fc.integer({ min: 0, max: 5_000 }), weight: 2 },
  { arbitrary: fc.integer({ min: 0, max: 40_000 }), weight: 1 }
)
const arbOp = fc.record({ node: fc.integer({ min: 1, max: 7 }), dtMs: arbDelay, spec: arbSpec })

const toInputs = (table: PeerTable, node: number, spec: Spec): Array<KeyExchangeInput> => {
  const currentId = table.get(node)?.session?.id ?? 0
  const id = (current: boolean) => (current ? currentId : currentId + 1_000)
  switch (spec.tag) {
    case "pila":
      return [pila(KEYS[spec.key], VIAS[spec.via])]
    case "pilk":
      return [{ _tag: "KeyExchange", x25519: KEYS[spec.key]!, via: VIAS[spec.via]!, registryKnowsNode: spec.known }]
    case "decrypted": {
      const packet = spec.src === 0 ? dataPacket(node) : spec.src === 1 ? keepalive(0) : dataPacket(node + 1)
      return [decrypted(packet, VIAS[spec.via], id(spec.current), spec.epoch)]
    }
    case "rejected":
      return [{ _tag: "DecryptRejected", session: id(spec.current), via: VIAS[spec.via]!, fault: spec.fault }]
    case "noSession":
      return [{ _tag: "NoSession", via: VIAS[spec.via]! }]
    case "installFailed":
      return [{ _tag: "InstallFailed", session: id(spec.current) }]
    case "outbound":
      return Array.from({ length: spec.count }, (_, i) => outbound(i))
    case "restored":
      return [{ _tag: "DirectPathRestored" }]
    case "remove":
      return [REMOVE]
    case "tick":
      return []
  }
}

const checkBounds = (table: PeerTable): void => {
  let sessions = 0
  let pendingPeers = 0
  for (const [, state] of table.entries()) {
    if (state.session !== undefined) sessions++
    if (state.pending.length > 0) pendingPeers++
    expect(state.pending.length).toBeLessThanOrEqual(MAX_PENDING_PER_PEER)
  }
  expect(table.sessions).toBe(sessions)
  expect(table.pendingPeers).toBe(pendingPeers)
  expect(sessions).toBeLessThanOrEqual(PROP_LIMITS.maxCryptoPeers)
  expect(pendingPeers).toBeLessThanOrEqual(PROP_LIMITS.maxPendingPeers)
  expect(table.size).toBeLessThanOrEqual(PROP_LIMITS.maxCryptoPeers + PROP_LIMITS.maxSessionlessPeers)
}

describe("PeerTable properties", () => {
  it("for any input sequence: every bound holds, and a same-key frame never installs a session", () => {
    fc.assert(
      fc.property(fc.array(arbOp, { maxLength: 150 }), (ops) => {
        const table = new PeerTable(PROP_LIMITS)
        let nowMs = 0
        for (const { dtMs, node, spec } of ops) {
          nowMs += dtMs
          if (spec.tag === "tick") {
            const served = table.tick(nowMs)
            const sends = served.filter((p) => p.actions.some((a) => a._tag === "SendKeyExchange")).length
            expect(sends).toBeLessThanOrEqual(PROP_LIMITS.maxRetransmitsPerTick)
          }
          for (const input of toInputs(table, node, spec)) {
            const before = table.get(node)?.session
            const sessionsBefore = table.sessions
            const actions = table.step(node, input, nowMs)
            const installs = actions.filter((a) => a._tag === "InstallSession")
            expect(installs.length).toBeLessThanOrEqual(1)
            if (input._tag === "AuthKeyExchange" || input._tag === "KeyExchange") {
              if (before !== undefined && bytesEqual(before.peerX25519, input.x25519)) expect(installs).toEqual([])
              if (before === undefined && sessionsBefore >= PROP_LIMITS.maxCryptoPeers) expect(installs).toEqual([])
            } else {
              expect(installs).toEqual([])
            }
            checkBounds(table)
          }
          checkBounds(table)
        }
      }),
      { numRuns: 300 }
    )
  })
})

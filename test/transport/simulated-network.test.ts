import { describe, expect, it } from "@effect/vitest"
import { type LinkConditions, mulberry32, PERFECT_LINK, SimulatedNetwork } from "./simulated-network.ts"

/** Sends `count` numbered packets A→B, one per ms, and returns what B got, in order, with arrival times. */
const transmit = (seed: number, conditions: LinkConditions, count: number) => {
  const network = new SimulatedNetwork<number>({ seed, conditions })
  const arrivals: Array<readonly [number, number]> = []
  network.attach("B", (packet) => arrivals.push([packet, network.now]))
  for (let i = 0; i < count; i++) network.schedule(i, () => network.send("A", "B", i))
  expect(network.run(() => false, Infinity)).toBe("quiet")
  return { arrivals, stats: network.stats, network }
}

describe("mulberry32", () => {
  it("is deterministic per seed and spreads over [0, 1)", () => {
    const a = mulberry32(42)
    const b = mulberry32(42)
    const values = Array.from({ length: 10_000 }, () => a())
    expect(values.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => b()))
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0)
    expect(Math.max(...values)).toBeLessThan(1)
    const mean = values.reduce((s, v) => s + v, 0) / values.length
    expect(mean).toBeGreaterThan(0.48)
    expect(mean).toBeLessThan(0.52)
  })
})

describe("SimulatedNetwork", () => {
  const lossy: LinkConditions = { loss: 0.2, duplicate: 0.1, reorder: 0.1, delayMs: 20, jitterMs: 15 }

  it("replays the same run for the same seed, and another for another seed", () => {
    const one = transmit(7, lossy, 500).arrivals
    expect(transmit(7, lossy, 500).arrivals).toEqual(one)
    expect(transmit(8, lossy, 500).arrivals).not.toEqual(one)
  })

  it("delivers everything in order after the delay on a perfect link", () => {
    const { arrivals } = transmit(1, PERFECT_LINK, 100)
    expect(arrivals).toEqual(Array.from({ length: 100 }, (_, i) => [i, i + PERFECT_LINK.delayMs]))
  })

  it("keeps a jittered link FIFO unless a packet is picked for reordering", () => {
    const fifo = transmit(3, { ...PERFECT_LINK, jitterMs: 50 }, 1000).arrivals.map(([p]) => p)
    expect(fifo).toEqual([...fifo].sort((x, y) => x - y))
    const reordered = transmit(3, { ...PERFECT_LINK, reorder: 0.2 }, 1000)
    const order = reordered.arrivals.map(([p]) => p)
    expect(order).not.toEqual([...order].sort((x, y) => x - y))
    expect(reordered.stats.reordered).toBeGreaterThan(150)
  })

  it("loses and duplicates packets at about the configured rates", () => {
    const { arrivals, stats } = transmit(11, { ...PERFECT_LINK, loss: 0.3, duplicate: 0.1 }, 10_000)
    expect(stats.lost / 10_000).toBeGreaterThan(0.28)
    expect(stats.lost / 10_000).toBeLessThan(0.32)
    expect(stats.duplicated / (10_000 - stats.lost)).toBeGreaterThan(0.08)
    expect(stats.duplicated / (10_000 - stats.lost)).toBeLessThan(0.12)
    expect(arrivals.length).toBe(10_000 - stats.lost + stats.duplicated)
  })

  it("drops everything sent during a partition and nothing outside it", () => {
    const { arrivals, stats } = transmit(5, { ...PERFECT_LINK, partitions: [{ from: 100, to: 200 }] }, 300)
    const got = new Set(arrivals.map(([p]) => p))
    expect(stats.partitioned).toBe(100)
    for (let i = 0; i < 300; i++) expect(got.has(i)).toBe(i < 100 || i >= 200)
  })

  it("runs scheduled actions in time order, ties in scheduling order, skipping cancelled ones", () => {
    const network = new SimulatedNetwork<never>({ seed: 1, conditions: PERFECT_LINK })
    const log: Array<string> = []
    network.schedule(5, () => log.push("b"))
    network.schedule(1, () => log.push("a"))
    network.schedule(5, () => log.push("c"))
    network.schedule(3, () => log.push("never")).cancelled = true
    expect(network.run(() => false, 4)).toBe("time_limit")
    expect(log).toEqual(["a"])
    expect(network.run(() => log.length === 3, Infinity)).toBe("done")
    expect(log).toEqual(["a", "b", "c"])
    expect(network.now).toBe(5)
    expect(network.describe()).toContain("seed=1")
  })
})

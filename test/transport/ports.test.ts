import { describe, expect, it } from "@effect/vitest"
import { MIN_EPHEMERAL_PORT } from "../../src/protocol/packet.ts"
import { ACCEPT_QUEUE_CAPACITY, AcceptQueue, EphemeralPorts, MAX_EPHEMERAL_PORT } from "../../src/transport/ports.ts"

const ALL = MAX_EPHEMERAL_PORT - MIN_EPHEMERAL_PORT + 1

describe("EphemeralPorts", () => {
  it("hands out every port of 49152–65535 once, in order, then reports exhaustion", () => {
    const ports = new EphemeralPorts()
    const seen: Array<number> = []
    for (let port = ports.allocate(); port !== undefined; port = ports.allocate()) seen.push(port)
    expect(seen.length).toBe(ALL)
    expect(seen[0]).toBe(MIN_EPHEMERAL_PORT)
    expect(seen[ALL - 1]).toBe(MAX_EPHEMERAL_PORT)
    expect(new Set(seen).size).toBe(ALL)
    expect(ports.available).toBe(0)
    expect(ports.allocate()).toBeUndefined()
  })

  it("reuses the port that has been free the longest", () => {
    const ports = new EphemeralPorts()
    const first = ports.allocate()!
    const second = ports.allocate()!
    ports.release(second)
    ports.release(first)
    // Both went to the back of the queue, behind the 16382 ports never used.
    const next: Array<number> = []
    for (let i = 0; i < ALL - 2; i++) next.push(ports.allocate()!)
    expect(next).not.toContain(first)
    expect([ports.allocate(), ports.allocate()]).toEqual([second, first])
  })

  it("skips a port claimed by an explicit bind and refuses to claim one in use", () => {
    const ports = new EphemeralPorts()
    expect(ports.claim(MIN_EPHEMERAL_PORT + 1)).toBe(true)
    expect(ports.claim(MIN_EPHEMERAL_PORT + 1)).toBe(false)
    expect(ports.allocate()).toBe(MIN_EPHEMERAL_PORT)
    expect(ports.allocate()).toBe(MIN_EPHEMERAL_PORT + 2)
    expect(ports.isInUse(MIN_EPHEMERAL_PORT + 1)).toBe(true)
    expect(() => ports.claim(1001)).toThrow(RangeError)
  })

  it("finds the only free port of an almost full pool at once, again and again", () => {
    const ports = new EphemeralPorts()
    for (let i = 0; i < ALL; i++) ports.allocate()
    const victim = MIN_EPHEMERAL_PORT + 7777
    for (let round = 0; round < 1000; round++) {
      ports.release(victim)
      expect(ports.allocate()).toBe(victim)
    }
    expect(ports.available).toBe(0)
  })

  it("ignores releases of ports that are free or not ephemeral", () => {
    const ports = new EphemeralPorts()
    ports.release(MIN_EPHEMERAL_PORT)
    ports.release(80)
    expect(ports.available).toBe(ALL)
    expect(ports.allocate()).toBe(MIN_EPHEMERAL_PORT)
  })
})

describe("AcceptQueue", () => {
  it(`holds ${ACCEPT_QUEUE_CAPACITY} connections and refuses (and counts) the next`, () => {
    const queue = new AcceptQueue<number>()
    for (let i = 0; i < ACCEPT_QUEUE_CAPACITY; i++) expect(queue.offer(i)).toBe(true)
    expect(queue.offer(99)).toBe(false)
    expect(queue.offer(100)).toBe(false)
    expect([queue.size, queue.drops]).toEqual([ACCEPT_QUEUE_CAPACITY, 2])
  })

  it("hands connections out oldest first and makes room as it does", () => {
    const queue = new AcceptQueue<string>(2)
    queue.offer("a")
    queue.offer("b")
    expect(queue.take()).toBe("a")
    expect(queue.offer("c")).toBe(true)
    expect([queue.take(), queue.take(), queue.take()]).toEqual(["b", "c", undefined])
  })

  it("removes a connection that ended before it was accepted, and drains on close", () => {
    const queue = new AcceptQueue<string>()
    queue.offer("a")
    queue.offer("b")
    queue.offer("c")
    expect(queue.remove("b")).toBe(true)
    expect(queue.remove("b")).toBe(false)
    expect(queue.drain()).toEqual(["a", "c"])
    expect(queue.size).toBe(0)
  })
})

/**
 * Port bookkeeping for the transport (reference §3.2, §8.1): ephemeral source ports for dials and
 * datagrams, and a listener's accept queue.
 *
 * Ephemeral ports (49152–65535) come from a FIFO of free ports: `allocate` takes the port that has been
 * free the longest, `release` puts a port at the back. Every operation is O(1) amortized — the reference's
 * linear scan over all connections under a write lock burned 400 % CPU (§13). Handing out the
 * longest-free port also maximizes the time before a 4-tuple is reused, which matters with ISN 0: a late
 * segment of an old connection must not land in a new one. A port taken by an explicit bind (`claim`)
 * stays in the FIFO and is skipped when it comes up; each skip pays for one claim.
 *
 * The accept queue holds connections a listener has established and the application has not accepted
 * yet: 64 at most; `offer` refuses the 65th (the caller resets that connection, so no orphan is left) and
 * counts it in `drops` (`accept_queue_drops` in Info).
 */
import { MIN_EPHEMERAL_PORT } from "../protocol/packet.ts"

export const MAX_EPHEMERAL_PORT = 0xffff
const EPHEMERAL_COUNT = MAX_EPHEMERAL_PORT - MIN_EPHEMERAL_PORT + 1

export const isEphemeralPort = (port: number): boolean =>
  Number.isInteger(port) && port >= MIN_EPHEMERAL_PORT && port <= MAX_EPHEMERAL_PORT

export class EphemeralPorts {
  readonly #inUse = new Uint8Array(EPHEMERAL_COUNT)
  /** Whether the port currently sits in the FIFO (so it is never queued twice). */
  readonly #queued = new Uint8Array(EPHEMERAL_COUNT)
  readonly #fifo = new Uint16Array(EPHEMERAL_COUNT)
  #head = 0
  #queuedCount = EPHEMERAL_COUNT
  #inUseCount = 0

  constructor() {
    for (let i = 0; i < EPHEMERAL_COUNT; i++) this.#fifo[i] = MIN_EPHEMERAL_PORT + i
    this.#queued.fill(1)
  }

  /** Ports not in use. */
  get available(): number {
    return EPHEMERAL_COUNT - this.#inUseCount
  }

  isInUse(port: number): boolean {
    return isEphemeralPort(port) && this.#inUse[port - MIN_EPHEMERAL_PORT] === 1
  }

  /** The longest-free ephemeral port, now in use; `undefined` when all 16384 are taken. */
  allocate(): number | undefined {
    while (this.#queuedCount > 0) {
      const port = this.#fifo[this.#head] as number
      this.#head = (this.#head + 1) % EPHEMERAL_COUNT
      this.#queuedCount--
      const index = port - MIN_EPHEMERAL_PORT
      this.#queued[index] = 0
      if (this.#inUse[index] === 0) {
        this.#markInUse(index)
        return port
      }
    }
    return undefined
  }

  /** Marks a specific ephemeral port as used (an explicit bind). False if it already was. */
  claim(port: number): boolean {
    if (!isEphemeralPort(port)) throw new RangeError(`port ${port} is not ephemeral`)
    const index = port - MIN_EPHEMERAL_PORT
    if (this.#inUse[index] === 1) return false
    this.#markInUse(index)
    return true
  }

  /** Returns a port to the pool (no-op for a port that is not in use). */
  release(port: number): void {
    if (!isEphemeralPort(port)) return
    const index = port - MIN_EPHEMERAL_PORT
    if (this.#inUse[index] === 0) return
    this.#inUse[index] = 0
    this.#inUseCount--
    if (this.#queued[index] === 1) return
    this.#fifo[(this.#head + this.#queuedCount) % EPHEMERAL_COUNT] = port
    this.#queued[index] = 1
    this.#queuedCount++
  }

  #markInUse(index: number): void {
    this.#inUse[index] = 1
    this.#inUseCount++
  }
}

export const ACCEPT_QUEUE_CAPACITY = 64

export class AcceptQueue<T> {
  readonly capacity: number
  readonly #items: Array<T> = []
  #drops = 0

  constructor(capacity: number = ACCEPT_QUEUE_CAPACITY) {
    this.capacity = capacity
  }

  get size(): number {
    return this.#items.length
  }
  /** Connections refused because the queue was full. */
  get drops(): number {
    return this.#drops
  }

  /** Queues a newly established connection; false (and counted) when full: the caller resets it. */
  offer(item: T): boolean {
    if (this.#items.length >= this.capacity) {
      this.#drops++
      return false
    }
    this.#items.push(item)
    return true
  }

  /** The oldest waiting connection, if any. */
  take(): T | undefined {
    return this.#items.shift()
  }

  /** Drops a queued connection that ended before it was accepted. */
  remove(item: T): boolean {
    const index = this.#items.indexOf(item)
    if (index < 0) return false
    this.#items.splice(index, 1)
    return true
  }

  /** Empties the queue (listener closing): the caller resets what it gets back. */
  drain(): Array<T> {
    return this.#items.splice(0, this.#items.length)
  }
}

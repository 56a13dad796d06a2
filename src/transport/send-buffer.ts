/**
 * Bytes the application has written and the sender has not yet put into a segment: a FIFO of chunks.
 *
 * `append` copies (the caller's buffer may be a reused read buffer); `take` cuts the next segment's
 * payload without copying when it lies inside one chunk — the common case for large writes — and gathers
 * into a fresh array only when a segment spans chunks (coalesced small writes). Capacity is the caller's
 * business (the stream refuses writes past its cap).
 */
export class SendBuffer {
  #chunks: Array<Uint8Array> = []
  #first = 0
  /** Bytes of `#chunks[#first]` already taken. */
  #offset = 0
  #length = 0

  get length(): number {
    return this.#length
  }

  append(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) return
    this.#chunks.push(bytes.slice())
    this.#length += bytes.byteLength
  }

  /** The first `min(n, length)` bytes, left in place. */
  peek(n: number): Uint8Array {
    return this.#gather(n, false)
  }

  /** Removes and returns the first `min(n, length)` bytes. */
  take(n: number): Uint8Array {
    return this.#gather(n, true)
  }

  #gather(n: number, consume: boolean): Uint8Array {
    const want = Math.min(n, this.#length)
    const head = this.#chunks[this.#first]
    if (head === undefined || want === 0) return new Uint8Array(0)
    if (head.byteLength - this.#offset >= want) {
      const view = head.subarray(this.#offset, this.#offset + want)
      if (consume) this.#advance(want)
      return view
    }
    const out = new Uint8Array(want)
    let filled = 0
    let index = this.#first
    let offset = this.#offset
    while (filled < want) {
      const chunk = this.#chunks[index] as Uint8Array
      const piece = Math.min(chunk.byteLength - offset, want - filled)
      out.set(chunk.subarray(offset, offset + piece), filled)
      filled += piece
      index++
      offset = 0
    }
    if (consume) this.#advance(want)
    return out
  }

  #advance(n: number): void {
    this.#length -= n
    let left = n
    while (left > 0) {
      const chunk = this.#chunks[this.#first] as Uint8Array
      const available = chunk.byteLength - this.#offset
      if (left < available) {
        this.#offset += left
        return
      }
      left -= available
      this.#first++
      this.#offset = 0
    }
    if (this.#first === this.#chunks.length) {
      this.#chunks = []
      this.#first = 0
    } else if (this.#first > 64 && this.#first * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#first)
      this.#first = 0
    }
  }
}

/**
 * The encrypted-UDP ceiling in Node on this machine: raw `node:dgram` on loopback with one AES-256-GCM seal per
 * packet on the sender and one open per packet on the receiver (key object made once, as our tunnel does), no
 * protocol, no reliability, only a flow-control window so the sender cannot outrun the receiver. Whatever
 * pilotfish's data plane reaches is read against this.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes } from "node:crypto"
import * as dgram from "node:dgram"

export interface RawResult {
  /** Payload bytes delivered and authenticated per second. */
  readonly mbPerSecond: number
  readonly packetsPerSecond: number
  /** Fraction of sent packets that never arrived (the sender does not slow down for the receiver). */
  readonly loss: number
}

const bind = (socket: dgram.Socket) => new Promise<number>((resolve) => socket.bind(0, "127.0.0.1", () => resolve(socket.address().port)))

/** Sends `packets` datagrams of `size` payload bytes, in bursts that wait for the kernel to take each burst. */
export const measureRawUdpAead = async (packets: number, size = 1200): Promise<RawResult> => {
  const key = createSecretKey(randomBytes(32))
  const aad = Buffer.from([0, 0, 0, 1])
  const receiver = dgram.createSocket({ type: "udp4", recvBufferSize: 4 * 1024 * 1024 })
  const sender = dgram.createSocket({ type: "udp4", sendBufferSize: 4 * 1024 * 1024 })
  const port = await bind(receiver)
  await bind(sender)
  await new Promise<void>((resolve) => sender.connect(port, "127.0.0.1", resolve))

  let received = 0
  let bytes = 0
  let lastAt = performance.now()
  receiver.on("message", (message) => {
    const nonce = message.subarray(0, 12)
    const tag = message.subarray(message.length - 16)
    const decipher = createDecipheriv("aes-256-gcm", key, nonce)
    decipher.setAAD(aad)
    decipher.setAuthTag(tag)
    const plain = decipher.update(message.subarray(12, message.length - 16))
    decipher.final()
    received++
    bytes += plain.length
    lastAt = performance.now()
  })

  const plaintext = randomBytes(size)
  const nonce = Buffer.alloc(12)
  const start = performance.now()
  const burst = 64
  const window = 512
  for (let sent = 0; sent < packets; sent += burst) {
    // Pace the sender to the receiver (both share this event loop): at most `window` packets in flight, the
    // most a real protocol's flow control would allow, so the ceiling measures goodput, not loss.
    while (sent - received > window) await new Promise((resolve) => setImmediate(resolve))
    const pending: Array<Promise<void>> = []
    for (let i = 0; i < burst && sent + i < packets; i++) {
      nonce.writeUInt32BE(sent + i, 8)
      const cipher = createCipheriv("aes-256-gcm", key, nonce)
      cipher.setAAD(aad)
      const sealed = Buffer.concat([nonce, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
      pending.push(new Promise((resolve) => sender.send(sealed, () => resolve())))
    }
    await Promise.all(pending)
  }
  // Let the receiver drain (it runs on the same event loop and can lag behind the sender): wait until every
  // packet arrived or nothing more arrived for 100 ms.
  for (let before = -1; received < packets && received !== before;) {
    before = received
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const seconds = (lastAt - start) / 1000
  sender.close()
  receiver.close()
  return { mbPerSecond: bytes / 1e6 / seconds, packetsPerSecond: received / seconds, loss: 1 - received / packets }
}

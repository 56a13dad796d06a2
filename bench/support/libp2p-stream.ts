/**
 * The peer-library baseline: two js-libp2p nodes in this process (TCP + Noise + Yamux) on loopback, one stream,
 * `bytes` pushed through it in 64 KiB writes with backpressure; throughput measured until the last byte arrives.
 */
import { noise } from "@chainsafe/libp2p-noise"
import { yamux } from "@chainsafe/libp2p-yamux"
import { tcp } from "@libp2p/tcp"
import { createLibp2p } from "libp2p"

const PROTOCOL = "/pilotfish-bench/1.0.0"

const makeNode = () =>
  createLibp2p({
    addresses: { listen: ["/ip4/127.0.0.1/tcp/0"] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()]
  })

/** Returns MB/s (payload) for one stream transfer of `bytes`. */
export const measureLibp2pStream = async (bytes: number): Promise<number> => {
  const a = await makeNode()
  const b = await makeNode()
  try {
    let received = 0
    const done = Promise.withResolvers<void>()
    await b.handle(PROTOCOL, async (stream) => {
      for await (const chunk of stream) {
        received += chunk.byteLength
        if (received >= bytes) done.resolve()
      }
    })
    const stream = await a.dialProtocol(b.getMultiaddrs()[0]!, PROTOCOL)
    const chunk = new Uint8Array(64 * 1024)
    const start = performance.now()
    for (let sent = 0; sent < bytes; sent += chunk.byteLength) {
      if (!stream.send(chunk)) await new Promise((resolve) => stream.addEventListener("drain", resolve, { once: true }))
    }
    await done.promise
    const seconds = (performance.now() - start) / 1000
    await stream.close()
    return bytes / 1e6 / seconds
  } finally {
    await a.stop()
    await b.stop()
  }
}

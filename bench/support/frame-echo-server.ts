/**
 * The transport ceiling for a length-prefixed request/response protocol in Node on this machine: a server that
 * answers every request frame with one canned reply frame, doing no other work. Run as a child process, so it
 * gets its own event loop (and core) exactly like the server it is a baseline for.
 *
 *   node bench/support/frame-echo-server.ts <reply body, base64>
 *
 * Prints `frame-echo-server listening port=<port>` on stdout once bound to a free loopback port. Framing uses
 * the project's splitter, the same the registry uses; parsing and handling are what it leaves out.
 */
import * as net from "node:net"
import { encodeFrame, makeFrameSplitter } from "../../src/protocol/length-prefixed.ts"

const replyBody = Buffer.from(process.argv[2] ?? "", "base64")
const replyFrame = encodeFrame(replyBody)
if (replyBody.byteLength === 0 || replyFrame._tag === "Failure") {
  console.error("usage: frame-echo-server.ts <reply body as non-empty base64, at most 1 MiB>")
  process.exit(2)
}
const frame = replyFrame.success

const server = net.createServer((socket) => {
  const splitter = makeFrameSplitter()
  socket.on("data", (chunk: Buffer) => {
    const bodies = splitter.push(chunk)
    if (bodies._tag === "Failure") return socket.destroy()
    for (let i = 0; i < bodies.success.length; i++) socket.write(frame)
  })
  socket.on("error", () => socket.destroy())
})

server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  console.log(`frame-echo-server listening port=${typeof address === "object" && address !== null ? address.port : 0}`)
})
process.once("SIGTERM", () => process.exit(0))

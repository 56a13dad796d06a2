/**
 * A webhook endpoint for tests: a real HTTP server on loopback that hands each request's JSON body to `onBody` and
 * answers with the status `onBody` returns (`undefined`: no answer at all, a hanging endpoint). Closed with the
 * scope, open connections dropped first so that a hanging request cannot hold the close up.
 */
import { Effect } from "effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

export const startJsonReceiver = (onBody: (body: unknown) => number | undefined) =>
  Effect.gen(function*() {
    const server = yield* Effect.acquireRelease(
      Effect.callback<http.Server>((resume) => {
        const s = http.createServer((req, res) => {
          let body = ""
          req.on("data", (chunk: Buffer) => (body += chunk.toString()))
          req.on("end", () => {
            const status = onBody(JSON.parse(body))
            if (status !== undefined) res.writeHead(status).end()
          })
        })
        s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.callback<void>((resume) => {
          s.closeAllConnections()
          s.close(() => resume(Effect.void))
        })
    )
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook` }
  })

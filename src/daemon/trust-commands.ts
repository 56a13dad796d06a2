/**
 * The trust service as the daemon runs it (reference §5) and its IPC Handshake sub-commands (§9).
 *
 * `startTrust` opens the trust store (`<identity dir>/trust.json`) and the handshake service (port 444, relayed
 * poller) in the data plane's scope, once the node ID and transport exist. `makeTrustCommands` answers the
 * sub-commands from whatever trust service is running; before it runs they fail with `unavailable: …`.
 *
 * Replies (JSON): send → {status: "sent" | "in_flight", node_id}; approve / reject / revoke → {status, node_id};
 * pending → {pending: [...]}; trusted → {trusted: [...]} (approved_at in RFC 3339); wait → {node_id, trusted},
 * the timeout capped at 30 s.
 */
import { Effect } from "effect"
import type { Identity } from "../crypto/identity.ts"
import type { IpcMessageOf } from "../protocol/ipc.ts"
import type { JsonObject } from "../protocol/length-prefixed.ts"
import type { RegistryClient } from "../registry/client.ts"
import type { Transport } from "../transport/transport.ts"
import { type HandshakeService, makeHandshakeService } from "../trust/handshake-service.ts"
import type { TrustEvent, TrustPolicy, TrustState } from "../trust/trust-state.ts"
import { makeTrustStore, type TrustStore } from "../trust/trust-store.ts"
import { CommandFailure } from "./ipc-streams.ts"

export const MAX_WAIT_MS = 30_000

export interface RunningTrust {
  readonly store: TrustStore
  readonly service: HandshakeService
}

export interface StartTrustOptions<E> {
  readonly policy: TrustPolicy
  readonly directory: string
  readonly identity: Identity
  readonly nodeId: number
  readonly transport: Transport
  readonly registry: RegistryClient
  readonly registryKey: (nodeId: number) => Effect.Effect<Uint8Array | undefined, E>
  readonly tearDownTunnel?: (peer: number) => Effect.Effect<void>
  /** Where trust events go (the daemon's event bus). */
  readonly onEvent?: (event: TrustEvent) => Effect.Effect<void>
}

/** Opens the trust store and starts the handshake service in the caller's scope. */
export const startTrust = Effect.fnUntraced(function*<E>(options: StartTrustOptions<E>) {
  const store = yield* makeTrustStore({ directory: options.directory, policy: options.policy })
  if (store.loaded._tag === "Unparseable") {
    yield* Effect.logWarning("trust.json is unparseable; starting with no trust (the file is kept until trust changes)").pipe(
      Effect.annotateLogs({ path: store.path, reason: store.loaded.reason })
    )
  }
  const service = yield* makeHandshakeService({
    identity: options.identity,
    nodeId: options.nodeId,
    transport: options.transport,
    store,
    registry: options.registry,
    registryKey: options.registryKey,
    ...(options.tearDownTunnel === undefined ? {} : { tearDownTunnel: options.tearDownTunnel }),
    ...(options.onEvent === undefined ? {} : { onEvent: options.onEvent })
  })
  const running: RunningTrust = { store, service }
  return running
})

/** Pending requests waiting for a local decision (Health's `handshake_pending_count`). */
export const pendingCount = (state: TrustState): number => state.pending.size

const pendingJson = (state: TrustState) => ({
  pending: [...state.pending.values()].map((p) => ({
    node_id: p.node_id,
    public_key: p.public_key ?? "",
    justification: p.justification ?? "",
    received_at: new Date(p.received_at).toISOString()
  }))
})

const trustedJson = (state: TrustState) => ({
  trusted: [...state.trusted.values()].map((t) => ({
    node_id: t.node_id,
    public_key: t.public_key,
    approved_at: new Date(t.approved_at).toISOString(),
    mutual: t.mutual,
    ...(t.network === undefined ? {} : { network: t.network })
  }))
})

export type HandshakeRequest = IpcMessageOf<"Handshake">

export const makeTrustCommands = (trust: () => RunningTrust | undefined) => {
  const asFailure = (error: { readonly code: string; readonly message: string }) => new CommandFailure(error.code, error.message)
  const done = (status: string, node: number): JsonObject => ({ status, node_id: node })

  return (request: HandshakeRequest): Effect.Effect<JsonObject, CommandFailure> =>
    Effect.suspend((): Effect.Effect<JsonObject, CommandFailure> => {
      const running = trust()
      if (running === undefined) return Effect.fail(new CommandFailure("unavailable", "the trust service is not running yet (not registered)"))
      const { service, store } = running
      switch (request.sub) {
        case "Send":
          return service.handshake(request.node, request.justification).pipe(
            Effect.map(() => done("sent", request.node)),
            Effect.catchIf((error) => error.reason === "in_flight", () => Effect.succeed(done("in_flight", request.node))),
            Effect.mapError(asFailure)
          )
        case "Approve":
          return Effect.as(Effect.mapError(service.approve(request.node), asFailure), done("approved", request.node))
        case "Reject":
          return Effect.as(Effect.mapError(service.reject(request.node), asFailure), done("rejected", request.node))
        case "Revoke":
          return Effect.as(Effect.mapError(service.revoke(request.node), asFailure), done("revoked", request.node))
        case "Pending":
          return Effect.map(store.state, pendingJson)
        case "Trusted":
          return Effect.map(store.state, trustedJson)
        case "Wait":
          return Effect.map(
            service.waitForTrust(request.node, Math.min(request.timeoutMs, MAX_WAIT_MS)),
            (trusted) => ({ node_id: request.node, trusted })
          )
      }
    })
}

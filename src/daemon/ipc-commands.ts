/**
 * The daemon's IPC dispatcher (reference §9): routes each decoded request to the piece that answers it — status
 * (Health, Info), streams and datagrams (`ipc-streams.ts`), registry-backed commands (`registry-commands.ts`) and
 * trust handshakes (`trust-commands.ts`) — and turns every failure into one Error frame whose message starts with
 * a machine-readable code (`not_found: …`, `unavailable: …`), so drivers can pass the code through.
 *
 * Commands pilotfish does not implement are answered at once with `not_supported: …`, never left hanging.
 * Send and SendTo are fire-and-forget (no reply, even on error), as the reference has them.
 */
import { Effect } from "effect"
import { type IpcClient, type IpcClosed, type IpcDispatcher, ipcError } from "../ipc/client.ts"
import type { IpcMessage } from "../protocol/ipc.ts"
import type { JsonObject } from "../protocol/length-prefixed.ts"
import type { CommandFailure, IpcStreams } from "./ipc-streams.ts"
import type { RegistryCommands } from "./registry-commands.ts"
import type { HandshakeRequest } from "./trust-commands.ts"

export interface IpcCommandsOptions {
  readonly health: Effect.Effect<JsonObject>
  readonly info: Effect.Effect<JsonObject>
  readonly streams: IpcStreams
  readonly registry: RegistryCommands
  readonly handshake: (request: HandshakeRequest) => Effect.Effect<JsonObject, CommandFailure>
  /** `pilotctl prefer-direct`: reset a peer's path (the tunnel's `preferDirect`). */
  readonly preferDirect: (node: number) => Effect.Effect<JsonObject, CommandFailure>
}

type JsonReply = "InfoOK" | "HealthOK" | "HandshakeOK" | "PreferDirectOK" | "ResolveHostnameOK" | "SetHostnameOK" | "SetVisibilityOK" | "SetTagsOK" | "DeregisterOK"

export const makeIpcCommands = (options: IpcCommandsOptions): IpcDispatcher => {
  const { streams, registry } = options

  /** Sends `reply`'s outcome: its message on success, an Error frame carrying the failure's code otherwise. */
  const answer = <A>(client: IpcClient, reply: Effect.Effect<A, CommandFailure>, toMessage: (value: A) => IpcMessage) =>
    Effect.matchEffect(reply, {
      onFailure: (failure) => client.send(ipcError(failure.message)),
      onSuccess: (value) => client.send(toMessage(value))
    })
  const json = (client: IpcClient, cmd: JsonReply, reply: Effect.Effect<JsonObject, CommandFailure>) =>
    answer(client, reply, (value): IpcMessage => ({ cmd, json: value }))

  const dispatch = (client: IpcClient, message: IpcMessage): Effect.Effect<void, IpcClosed> => {
    switch (message.cmd) {
      case "Health":
        return json(client, "HealthOK", options.health)
      case "Info":
        return json(client, "InfoOK", options.info)
      case "Bind":
        return answer(client, streams.bind(client, message.port), () => ({ cmd: "BindOK", port: message.port }))
      case "Unbind":
        return answer(client, streams.unbind(client, message.port), () => ({ cmd: "UnbindOK", port: message.port }))
      case "Dial":
        return answer(client, streams.dial(client, message.addr, message.port), (connId) => ({ cmd: "DialOK", connId }))
      case "Send":
        return streams.send(client, message.connId, message.data)
      case "Close":
        return answer(client, streams.close(client, message.connId), () => ({ cmd: "CloseOK", connId: message.connId }))
      case "SendTo":
        return Effect.ignore(streams.sendTo(message.addr, message.port, message.data))
      case "SendToConfirm":
        return Effect.matchEffect(streams.sendTo(message.addr, message.port, message.data), {
          onFailure: (failure) => client.send(ipcError(`sendto: ${failure.message}`)),
          onSuccess: () => client.send({ cmd: "SendToOK" })
        })
      case "Handshake":
        return json(client, "HandshakeOK", options.handshake(message))
      case "PreferDirect":
        return json(client, "PreferDirectOK", options.preferDirect(message.node))
      case "ResolveHostname":
        return json(client, "ResolveHostnameOK", registry.resolveHostname(message.hostname))
      case "SetHostname":
        return json(client, "SetHostnameOK", registry.setHostname(message.hostname))
      case "SetVisibility":
        return json(client, "SetVisibilityOK", registry.setVisibility(message.public))
      case "SetTags":
        return json(client, "SetTagsOK", registry.setTags(message.tags))
      case "Deregister":
        return json(client, "DeregisterOK", registry.deregister)
      // Cancel: no dial is cancellable yet, and the reference says Cancel has no reply.
      case "Cancel":
        return Effect.void
      default:
        return client.send(ipcError(`not_supported: ${message.cmd} is not supported yet by pilotfish`))
    }
  }

  return { dispatch, clientClosed: streams.clientClosed }
}

/**
 * The IPC commands answered by the registry (reference §9): SetHostname, SetVisibility, SetTags, Deregister
 * (signed with our identity, for our node ID) and ResolveHostname (unsigned, cached 60 s). Each reply is the
 * registry's own JSON; a refusal or an unreachable registry becomes a `CommandFailure` carrying its code.
 *
 * Where the reference is silent: a successful SetHostname drops the cached resolution of both the old and the
 * new name, so a driver resolving right after a rename sees it; failures are never cached.
 */
import { Clock, Effect } from "effect"
import type { Identity } from "../crypto/identity.ts"
import {
  deregisterChallenge,
  setHostnameChallenge,
  setTagsChallenge,
  setVisibilityChallenge
} from "../protocol/registry.ts"
import type { JsonObject } from "../protocol/length-prefixed.ts"
import type { RegistryClient } from "../registry/client.ts"
import { CommandFailure } from "./ipc-streams.ts"

export const RESOLVE_CACHE_MS = 60_000
export const MAX_TAGS = 3

export interface RegistryCommands {
  readonly setHostname: (hostname: string) => Effect.Effect<JsonObject, CommandFailure>
  readonly setVisibility: (isPublic: boolean) => Effect.Effect<JsonObject, CommandFailure>
  readonly setTags: (tags: ReadonlyArray<string>) => Effect.Effect<JsonObject, CommandFailure>
  readonly deregister: Effect.Effect<JsonObject, CommandFailure>
  readonly resolveHostname: (hostname: string) => Effect.Effect<JsonObject, CommandFailure>
}

export interface RegistryCommandsOptions {
  readonly registry: RegistryClient
  readonly identity: Identity
  /** Our node ID, or `undefined` before the first registration. */
  readonly nodeId: () => number | undefined
  /** Told the hostname the registry accepted (`""`: cleared), so later registrations keep it. */
  readonly onHostnameSet?: (hostname: string) => void
}

export const makeRegistryCommands = (options: RegistryCommandsOptions): RegistryCommands => {
  const { registry, identity } = options
  const resolved = new Map<string, { readonly reply: JsonObject; readonly until: number }>()

  const call = (request: JsonObject) =>
    registry.call(request).pipe(
      Effect.mapError((error) =>
        error._tag === "RegistryRejected" ? new CommandFailure(error.code, error.error) : new CommandFailure(error.code, error.message)
      )
    )

  const signed = (type: string, challenge: (nodeId: number) => string, fields: JsonObject) =>
    Effect.suspend(() => {
      const nodeId = options.nodeId()
      if (nodeId === undefined) return Effect.fail(new CommandFailure("unavailable", "not registered yet"))
      return call({ type, node_id: nodeId, ...fields, signature: identity.signChallenge(challenge(nodeId)) })
    })

  const resolveHostname = (hostname: string) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const cached = resolved.get(hostname)
      if (cached !== undefined && cached.until > now) return cached.reply
      const reply = yield* call({ type: "resolve_hostname", hostname })
      // Bounded by pruning expired entries whenever one is added.
      for (const [name, entry] of resolved) if (entry.until <= now) resolved.delete(name)
      resolved.set(hostname, { reply, until: now + RESOLVE_CACHE_MS })
      return reply
    })

  return {
    setHostname: (hostname) =>
      signed("set_hostname", setHostnameChallenge, { hostname }).pipe(
        Effect.tap((reply) =>
          Effect.sync(() => {
            options.onHostnameSet?.(hostname)
            resolved.delete(hostname)
            for (const [name, entry] of resolved) if (entry.reply["node_id"] === reply["node_id"]) resolved.delete(name)
          })
        )
      ),
    setVisibility: (isPublic) => signed("set_visibility", setVisibilityChallenge, { public: isPublic }),
    setTags: (tags) =>
      tags.length > MAX_TAGS
        ? Effect.fail(new CommandFailure("invalid_tags", `at most ${MAX_TAGS} tags, got ${tags.length}`))
        : signed("set_tags", setTagsChallenge, { tags: [...tags] }),
    deregister: signed("deregister", deregisterChallenge, {}),
    resolveHostname
  }
}

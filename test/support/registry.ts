/**
 * An in-process registry on a loopback port, for tests: embedded store (no file) unless a store layer is given.
 */
import { localFileSystem } from "../../src/platform/file-system.ts"
import { Effect, Layer } from "effect"
import { type Identity } from "../../src/crypto/identity.ts"
import { makeRegistryClient } from "../../src/registry/client.ts"
import { layerEmbeddedStore } from "../../src/registry/embedded-store.ts"
import { makeRegistry, type RegistryOptions } from "../../src/registry/registry.ts"
import type { RegistryStore } from "../../src/registry/store.ts"

/**
 * Starts a registry in the current scope: the store is built into the same scope, so it outlives the server
 * and is released after it, as in the binary.
 */
export const startRegistry = (
  options: Partial<RegistryOptions> = {},
  store: Layer.Layer<RegistryStore, unknown> = layerEmbeddedStore().pipe(Layer.provide(localFileSystem))
) =>
  Effect.gen(function*() {
    const storeContext = yield* Layer.build(store)
    const registry = yield* makeRegistry({ host: "127.0.0.1", port: 0, ...options }).pipe(Effect.provide(storeContext))
    const address = registry.address
    if (address._tag === "UnixPathAddress") return yield* Effect.die("registry is not on TCP")
    const port = address.port
    return { port, registry, client: () => makeRegistryClient({ host: "127.0.0.1", port, callTimeout: "5 seconds" }) }
  })

/** A `register` request for `identity`, signed as pilotfish daemons sign it. */
export const registerRequest = (identity: Identity, listenAddr: string, extra: Record<string, unknown> = {}) => ({
  type: "register",
  listen_addr: listenAddr,
  public_key: identity.publicKeyBase64,
  ...extra
})

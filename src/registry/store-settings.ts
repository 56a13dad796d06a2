/**
 * Which store a registry keeps its state in, as the binaries configure it (`--store FILE` for the embedded
 * store's snapshot, `--redis URL` for Redis, neither for memory only): the `RegistryStore` layer to build, and
 * how to describe it in logs and health output without leaking Redis credentials. Shared by `pilot-registry`
 * and `pilot-rendezvous` (and so `npm start`).
 */
import { Layer, Option } from "effect"
import { localFileSystem } from "../platform/file-system.ts"
import { layerEmbeddedStore } from "./embedded-store.ts"
import { layerRedisStore } from "./redis-store.ts"
import type { RegistryStore } from "./store.ts"

export interface StoreChoice {
  /** Snapshot file of the embedded store. */
  readonly store: Option.Option<string>
  /** Redis URL; exclusive with `store` (the binaries refuse both). */
  readonly redis: Option.Option<string>
}

export const storeLayer = (choice: StoreChoice): Layer.Layer<RegistryStore, unknown> =>
  Option.isSome(choice.redis)
    ? layerRedisStore({ url: choice.redis.value })
    : layerEmbeddedStore(Option.isSome(choice.store) ? { path: choice.store.value } : {}).pipe(Layer.provide(localFileSystem))

/** The Redis URL without credentials, for logs and health output. */
const redactUrl = (url: string) => {
  try {
    const parsed = new URL(url)
    parsed.username = ""
    parsed.password = ""
    return parsed.toString()
  } catch {
    return "(unparsable URL)"
  }
}

export const storeDescription = (choice: StoreChoice): string =>
  Option.isSome(choice.redis)
    ? `redis ${redactUrl(choice.redis.value)}`
    : Option.isSome(choice.store)
    ? `embedded, snapshot ${choice.store.value}`
    : "embedded, memory only"

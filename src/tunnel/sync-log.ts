/**
 * Log lines from synchronous code — the UDP reader's per-datagram callback, `Tunnel.send` — through Effect's
 * logger. The key-exchange core hands the shell `Log` actions with a level; they must reach the same
 * logger (and the same test capture) as everything else, at exactly that level.
 *
 * Each line runs as a tiny fiber in the given `FiberSet`, with the context captured when the logger was made
 * (loggers, minimum level, annotations), so the line carries the owner's annotations plus `peer_node`.
 * Lines below the minimum level are discarded before anything is allocated: the Debug lines the core emits
 * per duplicate key exchange cost nothing in production. Everything the core logs at Info or above is
 * already rate-limited by the core itself (per-peer stamps, install-only Info), so the fiber per line stays
 * rare.
 */
import { Effect, FiberSet, LogLevel, References } from "effect"
import type { LogLevel as CoreLogLevel } from "./key-exchange.ts"

export type SyncLog = (level: CoreLogLevel, message: string, peerNode: number) => void

const EFFECT_LEVEL: Record<CoreLogLevel, LogLevel.Severity> = { Debug: "Debug", Info: "Info", Warning: "Warn" }

/** A synchronous logger whose lines run as fibers of `fibers` (closed with its scope). */
export const makeSyncLog = Effect.fnUntraced(function*(fibers: FiberSet.FiberSet<void, never>) {
  const minimum = yield* References.MinimumLogLevel
  const run = yield* FiberSet.runtime(fibers)<never>()
  const log: SyncLog = (level, message, peerNode) => {
    const effectLevel = EFFECT_LEVEL[level]
    if (!LogLevel.isGreaterThanOrEqualTo(effectLevel, minimum)) return
    run(Effect.logWithLevel(effectLevel)(message).pipe(Effect.annotateLogs("peer_node", peerNode)))
  }
  return log
})

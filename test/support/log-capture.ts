/**
 * A Logger that records every log entry in memory, for tests that assert on what a component logged.
 *
 * Providing `capture.layer` replaces the default loggers (tests stay quiet) for the effect it is provided to and
 * for every fiber forked from it, finalizers included (they capture the context they were registered in).
 *
 *   const logs = makeLogCapture()
 *   yield* component.pipe(Effect.provide(logs.layer))
 *   const [line] = logs.at("Error")
 *   expect(line?.annotations.fiber).toBe("udp")
 */
import { Cause, Formatter, Layer, Logger, References } from "effect"
import type { LogLevel } from "effect"

export interface CapturedLog {
  readonly level: LogLevel.LogLevel
  /** The message parts, formatted and joined by spaces. */
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
  readonly cause: Cause.Cause<unknown>
  /** The message followed by the pretty-printed cause (if any): what an operator would read. */
  readonly text: string
}

export interface LogCapture {
  /** Every entry, in the order logged. */
  readonly entries: ReadonlyArray<CapturedLog>
  /** The entries logged at exactly `level`. */
  readonly at: (level: LogLevel.LogLevel) => ReadonlyArray<CapturedLog>
  readonly layer: Layer.Layer<never>
}

const formatMessage = (message: unknown): string =>
  (Array.isArray(message) ? message : [message])
    .map((part) => typeof part === "string" ? part : Formatter.format(part))
    .join(" ")

export const makeLogCapture = (): LogCapture => {
  const entries: Array<CapturedLog> = []
  const logger = Logger.make(({ cause, fiber, logLevel, message }) => {
    const text = formatMessage(message)
    entries.push({
      level: logLevel,
      message: text,
      annotations: { ...fiber.getRef(References.CurrentLogAnnotations) },
      cause,
      text: cause.reasons.length === 0 ? text : `${text}\n${Cause.pretty(cause)}`
    })
  })
  return {
    entries,
    at: (level) => entries.filter((entry) => entry.level === level),
    layer: Logger.layer([logger])
  }
}

/**
 * Operator logging for every binary: structured lines on stderr (stdout stays free for machine-readable
 * output), as human-readable logfmt or as JSON, with a minimum level. Info is for state changes a human
 * cares about; Debug for the rest (see docs/OPERATIONS.md).
 */
import { Layer, Logger, type LogLevel, References } from "effect"

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"] as const
export type LogLevelName = (typeof LOG_LEVELS)[number]
export const LOG_FORMATS = ["text", "json"] as const
export type LogFormat = (typeof LOG_FORMATS)[number]

const levelOf: Record<LogLevelName, LogLevel.LogLevel> = {
  trace: "Trace",
  debug: "Debug",
  info: "Info",
  warn: "Warn",
  error: "Error"
}

export const loggingLayer = (options: { readonly level: LogLevelName; readonly format: LogFormat }): Layer.Layer<never> =>
  Layer.mergeAll(
    Logger.layer([Logger.withConsoleError(options.format === "json" ? Logger.formatJson : Logger.formatLogFmt)]),
    Layer.succeed(References.MinimumLogLevel, levelOf[options.level])
  )

import { describe, expect, it } from "@effect/vitest"
import { Cause, Exit } from "effect"
import { UnrecognizedOption } from "effect/cli/CliError"
import { readFileSync } from "node:fs"
import { EssentialFiberFailed } from "../../src/lifecycle/supervisor.ts"
import { ConfigError } from "../../src/platform/config-file.ts"
import { ExitCode, exitCodeOf } from "../../src/platform/exit-codes.ts"
import { formatHostPort, parseHostPort } from "../../src/platform/host-port.ts"
import { VERSION } from "../../src/platform/version.ts"
import { SnapshotUnreadable } from "../../src/registry/embedded-store.ts"

describe("exit codes", () => {
  it.each([
    ["success", Exit.succeed(1), ExitCode.ok],
    ["a signal (interruption only)", Exit.failCause(Cause.interrupt(1)), ExitCode.ok],
    ["a bad flag", Exit.fail(new UnrecognizedOption({ option: "--nope", suggestions: [] })), ExitCode.usage],
    ["a bad config file", Exit.fail(new ConfigError({ source: "x.json", detail: "bad" })), ExitCode.usage],
    ["an unreadable snapshot", Exit.fail(new SnapshotUnreadable({ path: "s.json", detail: "bad" })), ExitCode.startup],
    ["an essential fiber failure", Exit.fail(new EssentialFiberFailed({ fiber: "tcp", reason: "failed", cause: Cause.fail("x") })), ExitCode.essentialFailed],
    ["a defect", Exit.die(new Error("bug")), ExitCode.failure]
  ])("%s exits %i", (_name, exit, code) => {
    expect(exitCodeOf(exit)).toBe(code)
  })
})

describe("host:port", () => {
  it("parses the Go forms", () => {
    expect(parseHostPort(":9000")).toEqual({ port: 9000 })
    expect(parseHostPort("127.0.0.1:0")).toEqual({ host: "127.0.0.1", port: 0 })
    expect(parseHostPort("[::1]:9000")).toEqual({ host: "::1", port: 9000 })
    expect(parseHostPort("registry.example:9000")).toEqual({ host: "registry.example", port: 9000 })
  })

  it("explains what is wrong", () => {
    expect(parseHostPort("9000")).toMatch(/not host:port/)
    expect(parseHostPort("host:99999")).toMatch(/not 0-65535/)
    expect(parseHostPort("::1:9000")).toMatch(/brackets/)
  })

  it("formats with brackets for IPv6 and a fallback host", () => {
    expect(formatHostPort({ host: "::1", port: 1 })).toBe("[::1]:1")
    expect(formatHostPort({ port: 2 })).toBe("0.0.0.0:2")
  })
})

it("the version the binaries report is package.json's", () => {
  expect(VERSION).toBe(JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version)
})

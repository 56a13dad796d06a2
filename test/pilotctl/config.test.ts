/**
 * The config file's pure parts: which keys it yields, and the flag > env > file precedence.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as fc from "fast-check"
import { parseConfig, resolveSetting } from "../../src/pilotctl/config.ts"

const maybe = fc.option(fc.string(), { nil: undefined })

describe("pilotctl config", () => {
  it("the flag wins, then the environment, then the file", () =>
    fc.assert(
      fc.property(maybe, maybe, maybe, (flag, env, file) => {
        const config = file === undefined ? {} : { socket: file }
        const chosen = resolveSetting(flag, env, config, "socket")
        if (flag !== undefined) assert.strictEqual(chosen, flag)
        else if (env !== undefined) assert.strictEqual(chosen, env)
        else assert.strictEqual(chosen, file)
      }),
      { numRuns: 300 }
    ))

  it.effect("keeps the known string keys, ignores others, rejects non-objects and non-string known keys", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* parseConfig("f", { socket: "/s", registry: "h:1", hostname: "x", timeout: "5s" }), { socket: "/s", registry: "h:1", timeout: "5s" })
      for (const bad of [[], "text", null, { registry: 9000 }]) {
        const exit = yield* Effect.exit(parseConfig("f", bad))
        assert.isTrue(Exit.isFailure(exit), JSON.stringify(bad))
      }
    }))
})

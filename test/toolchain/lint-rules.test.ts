/**
 * The lint rules that keep raw async out of `src/` (DESIGN.md §4 rule 1) are part of the design, so they are
 * tested like code: each forbidden construct in a file under `src/` is rejected, the allow-listed bridge module
 * and test code are not restricted, and an `any` needs a disable comment that says why.
 */
import { ESLint } from "eslint"
import { describe, expect, it } from "vitest"

const eslint = new ESLint({ cwd: process.cwd() })

const ruleIds = async (code: string, filePath: string): Promise<Array<string>> => {
  const [result] = await eslint.lintText(code, { filePath })
  return (result?.messages ?? []).map((m) => m.ruleId ?? `fatal: ${m.message}`)
}

describe("lint rules for src/", () => {
  it.each([
    ["a raw setTimeout", "export const t = () => setTimeout(() => {}, 10)\n", "no-restricted-globals"],
    ["a raw setInterval", "export const t = () => setInterval(() => {}, 10)\n", "no-restricted-globals"],
    ["globalThis.setTimeout", "export const t = () => globalThis.setTimeout(() => {}, 10)\n", "no-restricted-properties"],
    ["node:timers/promises", "import { setTimeout as sleep } from \"node:timers/promises\"\nexport const s = sleep\n", "no-restricted-imports"],
    ["new Promise", "export const p = () => new Promise<void>((resolve) => resolve())\n", "no-restricted-syntax"],
    [".then(", "export const p = (x: Promise<number>) => x.then((n) => n + 1)\n", "no-restricted-syntax"],
    ["a floating promise", "export const f = async (x: () => Promise<void>) => { x() }\n", "@typescript-eslint/no-floating-promises"],
    ["an undisclosed any", "export const a: any = 1\n", "@typescript-eslint/no-explicit-any"]
  ])("rejects %s", async (_name, code, rule) => {
    expect(await ruleIds(code, "src/lifecycle/__lint_probe__.ts")).toContain(rule)
  })

  it("rejects a disable comment without a reason", async () => {
    const code = "// eslint-disable-next-line @typescript-eslint/no-explicit-any\nexport const a: any = 1\n"
    expect(await ruleIds(code, "src/lifecycle/__lint_probe__.ts")).toContain("@eslint-community/eslint-comments/require-description")
  })

  it("accepts an any whose disable comment says why", async () => {
    const code = "// eslint-disable-next-line @typescript-eslint/no-explicit-any -- probe\nexport const a: any = 1\n"
    expect(await ruleIds(code, "src/lifecycle/__lint_probe__.ts")).toEqual([])
  })

  it("lifts the raw-async rules only for the allow-listed bridge module and outside src/", async () => {
    const restricted = async (file: string) => {
      const config = await eslint.calculateConfigForFile(file) as { rules: Record<string, unknown> }
      return ["no-restricted-globals", "no-restricted-syntax"].filter((rule) => rule in config.rules)
    }
    expect(await restricted("src/lifecycle/supervisor.ts")).toEqual(["no-restricted-globals", "no-restricted-syntax"])
    expect(await restricted("src/platform/bridge.ts")).toEqual([])
    expect(await restricted("test/support/leak-check.ts")).toEqual([])
  })
})

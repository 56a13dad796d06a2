/**
 * `npx <binary>` after `npm ci` works only if the lockfile's root package lists the same `bin` entries as
 * package.json (npx reads the lockfile) and every entry file is executable (npm links it as is). Both broke once
 * when a binary was added without refreshing the lockfile; this keeps the README's `npx …` commands true.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "../..")
const readJson = (file: string) => JSON.parse(fs.readFileSync(path.join(root, file), "utf8")) as Record<string, unknown>

describe("package binaries", () => {
  it("the lockfile lists every bin of package.json, and each entry file is executable with a node shebang", () => {
    const bins = readJson("package.json")["bin"] as Record<string, string>
    const lockRoot = (readJson("package-lock.json")["packages"] as Record<string, Record<string, unknown>>)[""]
    assert.deepStrictEqual(lockRoot?.["bin"], bins, "run `npm install --package-lock-only` after changing bin")
    for (const [name, file] of Object.entries(bins)) {
      const full = path.join(root, file)
      assert.isTrue((fs.statSync(full).mode & 0o111) !== 0, `${name}: ${file} is executable (git update-index --chmod=+x)`)
      assert.match(fs.readFileSync(full, "utf8"), /^#!\/usr\/bin\/env node\n/, `${name}: ${file} starts with a node shebang`)
    }
  })
})

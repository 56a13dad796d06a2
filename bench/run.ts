/**
 * `npm run bench`: runs every benchmark in bench/ one after the other (never in parallel: they measure the
 * same two cores), or only those named on the command line (`npm run bench -- aead`). Each prints its own
 * Markdown table; docs/PERFORMANCE.md records the results with the command that produced them.
 */
import { spawnSync } from "node:child_process"
import { readdirSync } from "node:fs"
import * as path from "node:path"

const here = import.meta.dirname
const wanted = process.argv.slice(2)
const benches = readdirSync(here)
  .filter((f) => f.endsWith(".ts") && f !== "run.ts")
  .filter((f) => wanted.length === 0 || wanted.includes(path.basename(f, ".ts")))
  .sort()

let failed = 0
for (const file of benches) {
  console.log(`\n## ${file}\n`)
  const result = spawnSync(process.execPath, [path.join(here, file)], { stdio: "inherit" })
  if (result.status !== 0) {
    failed++
    console.error(`${file} failed with exit code ${result.status}`)
  }
}
process.exit(failed === 0 ? 0 : 1)

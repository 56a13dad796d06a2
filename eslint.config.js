import comments from "@eslint-community/eslint-plugin-eslint-comments/configs"
import js from "@eslint/js"
import { defineConfig } from "eslint/config"
import tseslint from "typescript-eslint"

// The only module in src/ allowed to touch raw timers and promises: it bridges Node callback and promise
// APIs into Effect (DESIGN.md §4 rule 1). Everything else goes through it or through Effect itself.
const bridgeModules = ["src/platform/bridge.ts"]

const rawAsync = [
  { name: "setTimeout", message: "Use Effect.sleep / Schedule / Effect.timeout (DESIGN.md §4 rule 1)." },
  { name: "setInterval", message: "Use Effect.repeat with a Schedule in a scoped fiber (DESIGN.md §4 rule 1)." },
  { name: "setImmediate", message: "Use Effect.yieldNow (DESIGN.md §4 rule 1)." }
]
const rawAsyncSyntax = [
  { selector: "NewExpression[callee.name='Promise']", message: "Use Effect.callback / Effect.promise (DESIGN.md §4 rule 1)." },
  { selector: "CallExpression[callee.property.name='then']", message: "Compose with Effect, not .then (DESIGN.md §4 rule 1)." }
]

export default defineConfig(
  { ignores: ["node_modules/**", "coverage/**"] },
  { linterOptions: { reportUnusedDisableDirectives: "error" } },
  js.configs.recommended,
  tseslint.configs.recommended,
  comments.recommended,
  {
    languageOptions: {
      parserOptions: {
        // The probe file lets test/toolchain/lint-rules.test.ts lint snippets as if they lived in src/.
        projectService: { allowDefaultProject: ["src/lifecycle/__lint_probe__.ts"] },
        tsconfigRootDir: import.meta.dirname
      }
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      // Effect.gen generators legitimately have no yield in small helpers.
      "require-yield": "off",
      // `while (true)` loops are the idiom for fiber loops.
      "no-constant-condition": ["error", { checkLoops: false }],
      // Every escape hatch (an `any`, a raw timer in a test helper…) says why, on the disable line.
      "@eslint-community/eslint-comments/require-description": ["error", { ignore: [] }],
      "@eslint-community/eslint-comments/disable-enable-pair": ["error", { allowWholeFile: true }]
    }
  },
  {
    files: ["src/**/*.ts"],
    ignores: bridgeModules,
    rules: {
      "no-restricted-globals": ["error", ...rawAsync],
      "no-restricted-syntax": ["error", ...rawAsyncSyntax],
      "no-restricted-properties": ["error", ...rawAsync.map((r) => ({ object: "globalThis", property: r.name, message: r.message }))],
      "no-restricted-imports": ["error", {
        paths: ["node:timers", "node:timers/promises", "timers", "timers/promises"].map((name) => ({
          name, message: "Use Effect's Clock and Schedule (DESIGN.md §4 rule 1)."
        }))
      }]
    }
  },
  { files: ["**/*.js"], ...tseslint.configs.disableTypeChecked }
)

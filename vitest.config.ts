import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The lifecycle oracle after every test file: no Node handle left open (test/support/oracle-setup.ts).
    setupFiles: ["test/support/oracle-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: integration tests own real sockets and child processes, so keep the pool small.
    maxWorkers: 2
  }
})

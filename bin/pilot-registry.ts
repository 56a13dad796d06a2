#!/usr/bin/env node
// pilot-registry: see src/registry/main.ts and README.md.
import "../src/registry/main.ts"

#!/usr/bin/env node
// pilot-beacon: see src/beacon/main.ts and README.md.
import "../src/beacon/main.ts"

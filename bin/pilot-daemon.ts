#!/usr/bin/env node
// pilot-daemon: see src/daemon/main.ts and README.md.
import "../src/daemon/main.ts"

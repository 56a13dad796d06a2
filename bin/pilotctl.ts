#!/usr/bin/env node
// pilotctl: see src/pilotctl/main.ts and README.md.
import "../src/pilotctl/main.ts"

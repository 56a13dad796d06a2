#!/usr/bin/env node
// pilot-rendezvous: see src/rendezvous/main.ts and README.md.
import "../src/rendezvous/main.ts"

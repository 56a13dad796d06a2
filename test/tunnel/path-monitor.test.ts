import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import {
  directDecrypted,
  directSent,
  FRESH_PATH,
  PROBE_INTERVAL_MS,
  pathVerdict,
  type PathState,
  probed,
  relayChanged,
  RESTORE_AFTER_DIRECT_DECRYPTS,
  SILENT_AFTER_MS,
  SILENT_SENDS
} from "../../src/tunnel/path-monitor.ts"

const direct = { relayed: false, hasDirectAddress: true }
const relayed = { relayed: true, hasDirectAddress: true }

const sendsAt = (times: ReadonlyArray<number>, path: PathState = FRESH_PATH): PathState =>
  times.reduce((p, t) => directSent(p, t), path)

describe("path monitor: silent direct path", () => {
  it("three unanswered sends, the first older than the limit: go to the relay", () => {
    const path = sendsAt([1_000, 2_000, 3_000])
    expect(pathVerdict(path, direct, 1_000 + SILENT_AFTER_MS)).toBe("keep")
    expect(pathVerdict(path, direct, 1_000 + SILENT_AFTER_MS + 1)).toBe("go_relay")
  })

  it("fewer sends than the limit never count as silent, however old", () => {
    const path = sendsAt(Array.from({ length: SILENT_SENDS - 1 }, (_, i) => i))
    expect(pathVerdict(path, direct, 10 * SILENT_AFTER_MS)).toBe("keep")
  })

  it("an authenticated direct receive answers every send before it", () => {
    const answered = directDecrypted(sendsAt([0, 1, 2]), false)
    expect(answered.restore).toBe(false)
    expect(answered.path.unansweredSends).toBe(0)
    expect(pathVerdict(answered.path, direct, 10 * SILENT_AFTER_MS)).toBe("keep")
  })

  it("a pinned peer goes to the relay at once", () => {
    expect(pathVerdict({ ...FRESH_PATH, pinned: true }, direct, 0)).toBe("go_relay")
  })
})

describe("path monitor: back to direct", () => {
  it(`${RESTORE_AFTER_DIRECT_DECRYPTS} authenticated direct receives while relayed restore the direct path`, () => {
    let path = relayChanged(FRESH_PATH)
    const restores: Array<boolean> = []
    for (let i = 0; i < RESTORE_AFTER_DIRECT_DECRYPTS; i++) {
      const step = directDecrypted(path, true)
      path = step.path
      restores.push(step.restore)
    }
    expect(restores).toEqual([...Array(RESTORE_AFTER_DIRECT_DECRYPTS - 1).fill(false), true])
    expect(path.directDecrypts).toBe(0)
  })

  it("a pinned peer is never restored", () => {
    let path: PathState = { ...FRESH_PATH, pinned: true }
    for (let i = 0; i < 10; i++) {
      const step = directDecrypted(path, true)
      expect(step.restore).toBe(false)
      path = step.path
    }
  })

  it("a relay flip starts the count afresh", () => {
    const twice = directDecrypted(directDecrypted(FRESH_PATH, true).path, true).path
    expect(relayChanged(twice).directDecrypts).toBe(0)
  })

  it("a relayed peer is probed once per interval, and only with a direct address", () => {
    expect(pathVerdict(FRESH_PATH, relayed, 0)).toBe("probe")
    const once = probed(FRESH_PATH, 0)
    expect(pathVerdict(once, relayed, PROBE_INTERVAL_MS - 1)).toBe("keep")
    expect(pathVerdict(once, relayed, PROBE_INTERVAL_MS)).toBe("probe")
    expect(pathVerdict(FRESH_PATH, { relayed: true, hasDirectAddress: false }, 0)).toBe("keep")
    expect(pathVerdict({ ...FRESH_PATH, pinned: true }, relayed, 0)).toBe("keep")
  })

  it("property: without a direct receive a relayed, unpinned peer is never restored; with enough it always is", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom("send", "recv", "flip"), { maxLength: 60 }), (events) => {
        let path = FRESH_PATH
        let relay = true
        let received = 0
        for (const [i, event] of events.entries()) {
          if (event === "send") path = directSent(path, i)
          else if (event === "flip") {
            path = relayChanged(path)
            received = 0
          } else {
            const step = directDecrypted(path, relay)
            path = step.path
            received++
            expect(step.restore).toBe(relay && received === RESTORE_AFTER_DIRECT_DECRYPTS)
            if (step.restore) {
              relay = false
              received = 0
            }
          }
        }
      })
    )
  })
})

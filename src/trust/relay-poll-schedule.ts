/**
 * When to poll the registry for relayed handshakes (reference §5), as a pure function of what happened and the
 * time: a baseline poll every keepalive interval; every 2 s for 2 minutes after we sent a request to a peer
 * (so its relayed answer arrives promptly; at most 64 peers tracked, the oldest dropped first); and on demand
 * (an operator looking at pending/trusted), never sooner than 2 s after the last poll. The first poll is due at
 * once, so requests parked while the daemon was down are picked up at start.
 *
 * The schedule is a small mutable record owned by the poll fiber's shell; times are unix milliseconds.
 */

export interface PollTiming {
  readonly baselineMs: number
  readonly fastIntervalMs: number
  readonly fastWindowMs: number
  readonly maxFastPeers: number
  readonly onDemandGapMs: number
}

export const DEFAULT_POLL_TIMING: PollTiming = {
  baselineMs: 60_000,
  fastIntervalMs: 2_000,
  fastWindowMs: 120_000,
  maxFastPeers: 64,
  onDemandGapMs: 2_000
}

export interface PollSchedule {
  lastPollAt: number | undefined
  /** Peer → end of its fast-poll window, oldest armed first. */
  readonly fastUntil: Map<number, number>
  onDemand: boolean
}

export const makePollSchedule = (): PollSchedule => ({ lastPollAt: undefined, fastUntil: new Map(), onDemand: false })

const dropExpired = (schedule: PollSchedule, now: number): void => {
  for (const [peer, until] of schedule.fastUntil) if (until <= now) schedule.fastUntil.delete(peer)
}

/** We sent a request to `peer`: poll fast for the next window (re-arming moves the peer to the newest slot). */
export const armFastPolling = (schedule: PollSchedule, peer: number, now: number, timing: PollTiming): void => {
  dropExpired(schedule, now)
  schedule.fastUntil.delete(peer)
  schedule.fastUntil.set(peer, now + timing.fastWindowMs)
  while (schedule.fastUntil.size > timing.maxFastPeers) {
    const oldest = schedule.fastUntil.keys().next()
    if (oldest.done === true) break
    schedule.fastUntil.delete(oldest.value)
  }
}

/** The time the next poll is due (≤ `now` means: poll now). */
export const nextPollAt = (schedule: PollSchedule, now: number, timing: PollTiming): number => {
  const last = schedule.lastPollAt
  if (last === undefined) return now
  dropExpired(schedule, now)
  let due = last + timing.baselineMs
  if (schedule.fastUntil.size > 0) due = Math.min(due, last + timing.fastIntervalMs)
  if (schedule.onDemand) due = Math.min(due, last + timing.onDemandGapMs)
  return due
}

/** A poll started at `now`: the on-demand request it serves is consumed. */
export const recordPoll = (schedule: PollSchedule, now: number): void => {
  schedule.lastPollAt = now
  schedule.onDemand = false
}

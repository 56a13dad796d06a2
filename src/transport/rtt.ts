/**
 * Round-trip time estimation and the retransmission timeout, per RFC 6298 with the reference's clamps
 * (§8.3): α = 1/8, β = 1/4, K = 4, clock granularity G = 10 ms, RTO clamped to [200 ms, 10 s], 1 s before
 * the first sample, doubled on every timeout (backoff) until a new sample recomputes it.
 *
 * Karn's rule is applied here, in `onAcked`, so that no caller can feed an ambiguous sample: a segment
 * that was retransmitted could be acknowledged for any of its copies, and a segment that was SACKed
 * before the cumulative ACK covered it waited for the hole below it, so neither measures the path.
 */
export const RTT_ALPHA = 1 / 8
export const RTT_BETA = 1 / 4
export const RTT_K = 4
export const CLOCK_GRANULARITY_MS = 10
export const MIN_RTO_MS = 200
export const MAX_RTO_MS = 10_000
export const INITIAL_RTO_MS = 1_000

const clampRto = (ms: number): number => Math.min(MAX_RTO_MS, Math.max(MIN_RTO_MS, ms))

export class RttEstimator {
  #srtt: number | undefined = undefined
  #rttvar = 0
  #rto = INITIAL_RTO_MS

  /** Smoothed RTT in ms, `undefined` before the first sample. */
  get srtt(): number | undefined {
    return this.#srtt
  }
  get rttvar(): number {
    return this.#rttvar
  }
  /** Current retransmission timeout in ms, backoff included. */
  get rto(): number {
    return this.#rto
  }

  /** Feeds one unambiguous measurement (RFC 6298 §2.2/§2.3) and recomputes the RTO, clearing any backoff. */
  sample(rttMs: number): void {
    const r = Math.max(0, rttMs)
    if (this.#srtt === undefined) {
      this.#srtt = r
      this.#rttvar = r / 2
    } else {
      this.#rttvar = (1 - RTT_BETA) * this.#rttvar + RTT_BETA * Math.abs(this.#srtt - r)
      this.#srtt = (1 - RTT_ALPHA) * this.#srtt + RTT_ALPHA * r
    }
    this.#rto = clampRto(this.#srtt + Math.max(CLOCK_GRANULARITY_MS, RTT_K * this.#rttvar))
  }

  /**
   * A segment sent at `sentAt` was acknowledged at `now`. Samples it only if Karn allows (sent once, never
   * SACKed); returns whether it did.
   */
  onAcked(sentAt: number, now: number, transmissions: number, wasSacked: boolean): boolean {
    if (transmissions !== 1 || wasSacked) return false
    this.sample(now - sentAt)
    return true
  }

  /** RFC 6298 §5.5: the timer expired, double the RTO (up to the maximum). */
  backoff(): void {
    this.#rto = clampRto(this.#rto * 2)
  }
}

/**
 * Counters of the IPC server (DESIGN.md §4 rule 8: every bound has an overflow policy and a counter). Plain
 * numbers updated on the hot path by the client fibers; `snapshot` copies them for health output, metrics export
 * and tests.
 */

export interface IpcServerStats {
  /** Clients connected now (refused ones never count). */
  readonly clients: number
  /** Clients accepted and closed at once because `maxClients` were connected. */
  readonly clientsRefused: number
  /** Decoded requests, by command name. */
  readonly requestsByCommand: Readonly<Record<string, number>>
  /** Requests running in their own fiber now (inline ones are not counted). */
  readonly requestsInFlight: number
  /** Requests whose handler died (a bug): contained, answered with an Error frame. */
  readonly requestFailures: number
  /** Clients disconnected because one write overran its deadline. */
  readonly writeTimeouts: number
  /** Frames that could not be decoded (each answered with an Error frame; an oversize one also closes). */
  readonly badFrames: number
  /** The deepest any client's send queue has been: proof that a stalled client costs bounded memory. */
  readonly sendQueueHighWater: number
}

export interface IpcCounters {
  clients: number
  clientsRefused: number
  readonly requestsByCommand: Map<string, number>
  requestsInFlight: number
  requestFailures: number
  writeTimeouts: number
  badFrames: number
  sendQueueHighWater: number
}

export const makeIpcCounters = (): IpcCounters => ({
  clients: 0,
  clientsRefused: 0,
  requestsByCommand: new Map(),
  requestsInFlight: 0,
  requestFailures: 0,
  writeTimeouts: 0,
  badFrames: 0,
  sendQueueHighWater: 0
})

export const countRequest = (counters: IpcCounters, cmd: string): void => {
  counters.requestsByCommand.set(cmd, (counters.requestsByCommand.get(cmd) ?? 0) + 1)
}

export const snapshotIpcCounters = (counters: IpcCounters): IpcServerStats => ({
  ...counters,
  requestsByCommand: Object.fromEntries(counters.requestsByCommand)
})

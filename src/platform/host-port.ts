/**
 * Listen and dial addresses in the Go style the reference binaries use: `host:port`, `:port` (every
 * interface), `[v6]:port`.
 */

export interface HostPort {
  /** Absent for `:port`: listen on every interface. */
  readonly host?: string
  readonly port: number
}

/** Parses `text`, or returns why it is not an address. */
export const parseHostPort = (text: string): HostPort | string => {
  const i = text.lastIndexOf(":")
  if (i < 0) return `"${text}" is not host:port`
  const rawHost = text.slice(0, i)
  const portText = text.slice(i + 1)
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : -1
  if (port < 0 || port > 65535) return `port "${portText}" of "${text}" is not 0-65535`
  const host = rawHost.startsWith("[") && rawHost.endsWith("]") ? rawHost.slice(1, -1) : rawHost
  if (host.includes(":") && !rawHost.startsWith("[")) return `IPv6 host in "${text}" needs brackets: [${host}]:${port}`
  return host === "" ? { port } : { host, port }
}

export const formatHostPort = (hp: HostPort, fallbackHost = "0.0.0.0"): string => {
  const host = hp.host ?? fallbackHost
  return host.includes(":") ? `[${host}]:${hp.port}` : `${host}:${hp.port}`
}

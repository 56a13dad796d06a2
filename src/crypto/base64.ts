/**
 * Standard (RFC 4648 §4, padded) base64 — the form Go's `base64.StdEncoding` writes for keys and
 * signatures in the identity file and registry messages.
 *
 * Decoding is strict on purpose: `Buffer.from(s, "base64")` silently skips characters it does not know,
 * so a damaged identity file could decode to a *different* key instead of failing. Here a string decodes
 * only if re-encoding the bytes gives the same string back (wrong alphabet, missing padding, whitespace
 * and non-canonical trailing bits are all rejected).
 */
import { Buffer } from "node:buffer"
import { asBuffer } from "./bytes.ts"

export const encodeBase64 = (bytes: Uint8Array): string => asBuffer(bytes).toString("base64")

/**
 * The decoded bytes, or `undefined` when `text` is not canonical standard base64. The result is a view
 * (small decodes live in Node's shared buffer pool), so a caller that zeroes a decoded secret zeroes the
 * only copy.
 */
export const decodeBase64 = (text: string): Uint8Array | undefined => {
  const bytes = Buffer.from(text, "base64")
  if (bytes.toString("base64") === text) return bytes
  bytes.fill(0) // a rejected private key may still be mostly key bytes
  return undefined
}

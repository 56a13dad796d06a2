/**
 * Byte-array glue between `Uint8Array` (what the rest of pilotfish passes around) and `Buffer` (what some
 * `node:crypto` signatures demand).
 */
import { Buffer } from "node:buffer"

/**
 * A `Buffer` view over the same memory — no copy, so zeroing either one zeroes the secret, and the hot
 * path allocates nothing but the view object.
 */
export const asBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** Byte equality for public values (keys, not secrets: no constant-time requirement). */
export const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean => asBuffer(a).equals(b)

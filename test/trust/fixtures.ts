/** A distinct valid Ed25519 public key text (standard base64 of 32 bytes) per small integer. */
export const keyOf = (n: number): string => Buffer.alloc(32, n).toString("base64")

/**
 * Tunnel crypto cost on this machine: AEAD seal+open per packet, X25519 key agreement, Ed25519
 * sign/verify — `node:crypto` versus `@noble/*`, to justify the choices in `src/crypto/session.ts`.
 *
 *   npx node bench/aead.ts
 *
 * The VM throttles its vCPUs for seconds at a time (DESIGN.md §8), so absolute numbers drift. Every
 * round therefore measures all contenders of a group back to back, in a rotating order, and the ratio to
 * the baseline is computed *within* each round before taking the median: throttling then hits the
 * numerator and the denominator alike. Each sample runs for a fixed time slice, so the total runtime is
 * bounded (~10 s here) whatever the speed of the machine.
 */
import { createCipheriv, createDecipheriv, createPublicKey, createSecretKey, diffieHellman, generateKeyPairSync, type KeyObject, randomBytes, sign, verify } from "node:crypto"
import { gcm } from "@noble/ciphers/aes.js"
import { ed25519, x25519 } from "@noble/curves/ed25519.js"
import { Result } from "effect"
import { deriveSessionKeys, generateTunnelKeyPair, type SessionKeys } from "../src/crypto/session.ts"

const ROUNDS = 15 // the first is a discarded warm-up
const SLICE_MS = 25 // time per sample
const SIZES = [64, 1200, 4096] as const
const TAG = 16
const SENDER_AAD = Uint8Array.of(0, 0, 0, 42)

interface Contender {
  readonly name: string
  /** One unit of work (seal+open of one packet, one agreement, one signature…). */
  readonly run: () => void
}

interface Group {
  readonly title: string
  /** Bytes per unit of work for an MB/s column, or undefined when throughput means nothing. */
  readonly bytes: number | undefined
  readonly contenders: ReadonlyArray<Contender> // the first is the baseline
}

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** µs per unit of work over one time slice; the clock is read every 8 units to keep its cost out. */
const sample = (run: () => void): number => {
  const deadline = performance.now() + SLICE_MS
  const start = performance.now()
  let units = 0
  let now = start
  while (now < deadline) {
    for (let i = 0; i < 8; i++) run()
    units += 8
    now = performance.now()
  }
  return ((now - start) * 1000) / units
}

// ---------------------------------------------------------------------------------------------------------
// AEAD contenders: each seals with a fresh counter nonce and opens the result, as one tunnel packet does.

const nonceSource = () => {
  const nonce = new Uint8Array(12)
  randomBytes(4).copy(nonce)
  const view = new DataView(nonce.buffer)
  let counter = 0
  return () => {
    view.setBigUint64(4, BigInt(++counter))
    return nonce
  }
}

const nodeAead = (key: KeyObject | Uint8Array) => {
  const next = nonceSource()
  return (plaintext: Uint8Array) => {
    const nonce = next()
    const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG })
    cipher.setAAD(SENDER_AAD)
    const ciphertext = cipher.update(plaintext)
    cipher.final()
    const tag = cipher.getAuthTag()
    const decipher = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG })
    decipher.setAAD(SENDER_AAD)
    decipher.setAuthTag(tag)
    const opened = decipher.update(ciphertext)
    decipher.final()
    return opened
  }
}

const nobleAead = (key: Uint8Array) => {
  const next = nonceSource()
  return (plaintext: Uint8Array) => {
    const nonce = next()
    const sealed = gcm(key, nonce, SENDER_AAD).encrypt(plaintext)
    return gcm(key, nonce, SENDER_AAD).decrypt(sealed)
  }
}

const sessionAead = (sender: SessionKeys, receiver: SessionKeys) => (plaintext: Uint8Array) => {
  const { nonce, sealed } = sender.seal(plaintext, 42)
  return Result.getOrThrow(receiver.open(nonce, sealed, 42)).plaintext
}

const aeadGroups = (): Array<Group> => {
  const rawKey = randomBytes(32)
  const keyObject = createSecretKey(rawKey)
  const a = generateTunnelKeyPair()
  const b = generateTunnelKeyPair()
  const sender = Result.getOrThrow(deriveSessionKeys(a.privateKey, b.publicKey))
  const receiver = Result.getOrThrow(deriveSessionKeys(b.privateKey, a.publicKey))
  const variants = [
    { name: "(a) node:crypto, createSecretKey key object", seal: nodeAead(keyObject) },
    { name: "(b) node:crypto, raw Buffer key", seal: nodeAead(rawKey) },
    { name: "(c) @noble/ciphers gcm", seal: nobleAead(new Uint8Array(rawKey)) },
    { name: "(d) pilotfish SessionKeys.seal + open", seal: sessionAead(sender, receiver) }
  ]
  // All four must round-trip, and (a)-(c) must agree byte for byte, or the numbers mean nothing.
  const probe = randomBytes(100)
  for (const v of variants) {
    if (!Buffer.from(v.seal(probe)).equals(probe)) throw new Error(`${v.name} does not round-trip`)
  }
  const fixedNonce = new Uint8Array(12)
  const nobleSealed = gcm(new Uint8Array(rawKey), fixedNonce, SENDER_AAD).encrypt(probe)
  const nodeCipher = createCipheriv("aes-256-gcm", keyObject, fixedNonce, { authTagLength: TAG }).setAAD(SENDER_AAD)
  const nodeSealed = Buffer.concat([nodeCipher.update(probe), nodeCipher.final(), nodeCipher.getAuthTag()])
  if (!nodeSealed.equals(nobleSealed)) throw new Error("node:crypto and @noble/ciphers disagree on AES-256-GCM")

  return SIZES.map((size) => {
    const plaintext = randomBytes(size)
    return {
      title: `AES-256-GCM seal+open, ${size}-byte packet`,
      bytes: size,
      contenders: variants.map((v) => ({ name: v.name, run: () => void v.seal(plaintext) }))
    }
  })
}

// ---------------------------------------------------------------------------------------------------------
// Public-key operations

const keyGroups = (): Array<Group> => {
  // X25519: the node side includes importing the peer's raw key, as x25519SharedSecret does per handshake.
  const ours = generateKeyPairSync("x25519")
  const peerRaw = createPublicKey(generateKeyPairSync("x25519").privateKey).export({ format: "raw-public" })
  const nobleOurs = x25519.utils.randomSecretKey()
  const noblePeer = x25519.getPublicKey(x25519.utils.randomSecretKey())

  const signer = generateKeyPairSync("ed25519")
  const signerRaw = signer.publicKey.export({ format: "raw-public" })
  const nobleSigner = ed25519.keygen()
  const message = randomBytes(40) // a PILA challenge
  const nodeSignature = sign(null, message, signer.privateKey)
  const nobleSignature = ed25519.sign(message, nobleSigner.secretKey)
  if (!ed25519.verify(nodeSignature, message, signerRaw)) throw new Error("noble rejects a node:crypto signature")

  const importEd = () => createPublicKey({ key: signerRaw, format: "raw-public", asymmetricKeyType: "ed25519" })
  return [
    {
      title: "X25519 shared secret (incl. peer key import)",
      bytes: undefined,
      contenders: [
        {
          name: "node:crypto",
          run: () =>
            void diffieHellman({
              privateKey: ours.privateKey,
              publicKey: createPublicKey({ key: peerRaw, format: "raw-public", asymmetricKeyType: "x25519" })
            })
        },
        { name: "@noble/curves", run: () => void x25519.getSharedSecret(nobleOurs, noblePeer) }
      ]
    },
    {
      title: "Ed25519 sign (40-byte message)",
      bytes: undefined,
      contenders: [
        { name: "node:crypto", run: () => void sign(null, message, signer.privateKey) },
        { name: "@noble/curves", run: () => void ed25519.sign(message, nobleSigner.secretKey) }
      ]
    },
    {
      title: "Ed25519 verify (40-byte message)",
      bytes: undefined,
      contenders: [
        { name: "node:crypto, imported key object", run: () => void verify(null, message, signer.publicKey, nodeSignature) },
        { name: "node:crypto, raw key imported per call", run: () => void verify(null, message, importEd(), nodeSignature) },
        { name: "@noble/curves", run: () => void ed25519.verify(nobleSignature, message, nobleSigner.publicKey) }
      ]
    }
  ]
}

// ---------------------------------------------------------------------------------------------------------

const measure = (groups: ReadonlyArray<Group>) => {
  const micros = groups.map((g) => g.contenders.map(() => [] as Array<number>))
  const ratios = groups.map((g) => g.contenders.map(() => [] as Array<number>))
  for (let round = 0; round < ROUNDS; round++) {
    groups.forEach((group, gi) => {
      const n = group.contenders.length
      const times = new Array<number>(n)
      for (let k = 0; k < n; k++) {
        const ci = (k + round) % n // rotate who goes first
        times[ci] = sample(group.contenders[ci]!.run)
      }
      if (round === 0) return // warm-up: JIT, OpenSSL contexts, key caches
      for (let ci = 0; ci < n; ci++) {
        micros[gi]![ci]!.push(times[ci]!)
        ratios[gi]![ci]!.push(times[ci]! / times[0]!)
      }
    })
  }
  return { micros, ratios }
}

const fmt = (x: number, digits: number) => x.toFixed(digits)

const report = (groups: ReadonlyArray<Group>, elapsedS: number) => {
  const { micros, ratios } = measure(groups)
  const lines = [
    `Node ${process.version}, ${ROUNDS - 1} rounds × ${SLICE_MS} ms slices per contender, medians; ` +
    `"× baseline" = median of per-round ratios to the first row of the group (lower is faster).`,
    "",
    "| operation | implementation | µs/op | MB/s | × baseline |",
    "|---|---|---:|---:|---:|"
  ]
  groups.forEach((group, gi) => {
    group.contenders.forEach((c, ci) => {
      const us = median(micros[gi]![ci]!)
      const mbs = group.bytes === undefined ? "—" : fmt(group.bytes / us, 1)
      lines.push(`| ${ci === 0 ? group.title : ""} | ${c.name} | ${fmt(us, 2)} | ${mbs} | ${fmt(median(ratios[gi]![ci]!), 2)} |`)
    })
  })
  lines.push("", `Total wall time ${fmt((performance.now() - elapsedS) / 1000, 1)} s.`)
  console.log(lines.join("\n"))
}

const startedAt = performance.now()
report([...aeadGroups(), ...keyGroups()], startedAt)

import * as NodeServices from "@effect/platform-node/NodeServices"
import { assert, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, FileSystem, Layer, Path } from "effect"
import { isPlatformError, systemError } from "effect/PlatformError"
import { writeFileAtomic } from "../../src/lifecycle/atomic-file.ts"

const TEMP_SUFFIX = ".tmp"

/** A fresh directory (removed with the test's scope) plus the real file system to inspect it with. */
const workspace = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "pilotfish-atomic-" })
  return { fs, dir, file: (name: string) => path.join(dir, name) }
})

const modeOf = (fs: FileSystem.FileSystem, file: string) => Effect.map(fs.stat(file), (info) => info.mode & 0o777)

type Fault = "writeAll" | "sync" | "rename"

/**
 * The real file system, except that operations on writeFileAtomic's temp files fail the way a full or failing disk
 * makes them fail: `writeAll` after really writing half of the bytes (ENOSPC), `sync` (EIO), or the final `rename`.
 */
const faultyFileSystem = (fault: Fault) =>
  Layer.effect(
    FileSystem.FileSystem,
    Effect.gen(function*() {
      const real = yield* FileSystem.FileSystem
      const isTemp = (file: string) => file.endsWith(TEMP_SUFFIX)
      const failure = (method: string, file: string | number) =>
        systemError({ _tag: "Unknown", module: "FileSystem", method, pathOrDescriptor: file, description: "injected fault" })

      const faultyFile = (file: FileSystem.File, name: string): FileSystem.File => ({
        [FileSystem.FileTypeId]: FileSystem.FileTypeId,
        get stat() {
          return file.stat
        },
        get sync() {
          return fault === "sync" ? Effect.fail(failure("sync", name)) : file.sync
        },
        seek: (offset, from) => file.seek(offset, from),
        read: (buffer, options) => file.read(buffer, options),
        readAlloc: (size, options) => file.readAlloc(size, options),
        truncate: (length) => file.truncate(length),
        write: (buffer) => file.write(buffer),
        writeAll: (buffer) =>
          fault === "writeAll"
            ? file.writeAll(buffer.subarray(0, buffer.length >> 1)).pipe(Effect.andThen(Effect.fail(failure("writeAll", name))))
            : file.writeAll(buffer)
      })

      return FileSystem.FileSystem.of({
        ...real,
        open: (file, options) =>
          isTemp(file) ? Effect.map(real.open(file, options), (handle) => faultyFile(handle, file)) : real.open(file, options),
        rename: (from, to) => fault === "rename" && isTemp(from) ? Effect.fail(failure("rename", from)) : real.rename(from, to)
      })
    })
  )

describe("writeFileAtomic", () => {
  it.effect("writes the content with mode 0600 and leaves no temp file", () =>
    Effect.gen(function*() {
      const { fs, dir, file } = yield* workspace
      yield* writeFileAtomic(file("trust.json"), `{"peers":[]}`)
      expect(yield* fs.readFileString(file("trust.json"))).toBe(`{"peers":[]}`)
      expect(yield* modeOf(fs, file("trust.json"))).toBe(0o600)
      expect(yield* fs.readDirectory(dir)).toEqual(["trust.json"])
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("replaces an existing file (bytes and mode) and leaves no temp file", () =>
    Effect.gen(function*() {
      const { fs, dir, file } = yield* workspace
      yield* fs.writeFileString(file("identity.json"), "old identity", { mode: 0o644 })
      yield* writeFileAtomic(file("identity.json"), new TextEncoder().encode("new identity"))
      expect(yield* fs.readFileString(file("identity.json"))).toBe("new identity")
      expect(yield* modeOf(fs, file("identity.json"))).toBe(0o600)
      expect(yield* fs.readDirectory(dir)).toEqual(["identity.json"])
    }).pipe(Effect.provide(NodeServices.layer)))

  it.effect("honours an explicit mode", () =>
    Effect.gen(function*() {
      const { fs, file } = yield* workspace
      // owner-read-only: no usual umask (022, 027, 077) changes it
      yield* writeFileAtomic(file("config.json"), "{}", { mode: 0o400 })
      expect(yield* modeOf(fs, file("config.json"))).toBe(0o400)
    }).pipe(Effect.provide(NodeServices.layer)))

  for (const fault of ["writeAll", "sync", "rename"] as const) {
    it.effect(`a write whose ${fault} fails leaves the previous file intact and no temp file behind`, () =>
      Effect.gen(function*() {
        const { fs, dir, file } = yield* workspace
        yield* writeFileAtomic(file("trust.json"), "previous trust")
        const exit = yield* Effect.exit(
          writeFileAtomic(file("trust.json"), "x".repeat(64 * 1024)).pipe(Effect.provide(faultyFileSystem(fault)))
        )
        assert.isTrue(Exit.isFailure(exit), "the injected fault must fail the write")
        expect(Exit.isFailure(exit) && exit.cause.reasons[0]?._tag === "Fail" && exit.cause.reasons[0].error)
          .toMatchObject({ reason: { method: fault, description: "injected fault" } })
        expect(yield* fs.readFileString(file("trust.json"))).toBe("previous trust")
        expect(yield* fs.readDirectory(dir)).toEqual(["trust.json"])
      }).pipe(Effect.provide(NodeServices.layer)))
  }

  it.effect("a missing directory fails with a PlatformError NotFound and creates nothing", () =>
    Effect.gen(function*() {
      const { fs, dir, file } = yield* workspace
      const error = yield* Effect.flip(writeFileAtomic(file("missing/trust.json"), "data"))
      assert.isTrue(isPlatformError(error))
      expect(error.reason._tag).toBe("NotFound")
      expect(yield* fs.readDirectory(dir)).toEqual([])
    }).pipe(Effect.provide(NodeServices.layer)))
})

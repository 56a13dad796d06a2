/**
 * The file-system services alone (FileSystem + Path), for components that only read and write files.
 * `NodeServices.layer` would also bring terminal and stdio services, which open stdin: a handle a component
 * that never reads stdin has no business holding.
 */
import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { Layer } from "effect"

export const localFileSystem = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer)

// An image as a container would see it: its layers from the registry applied in order (with
// whiteouts), every path with its type, mode, owner, link target and content digest; and its
// config. Modification times are left out: two full builds of one commit differ in them too.
import { RegistryClient } from "../../src/registry/client.js";
import { readLayer, type TarEntry } from "../../src/image/tar-entries.js";
import type { ImageConfig } from "../../src/fastpath/base.js";

export type FsEntry = Omit<TarEntry, "mtime" | "path" | "size">;

export interface ImageView {
  files: Map<string, FsEntry>;
  config: ImageConfig;
  configDigest: string;
  layers: number;
}

export async function viewImage(host: string, repo: string, tag: string, credential?: { username: string; password: string }): Promise<ImageView> {
  const client = new RegistryClient(host, repo, true, credential ? { credential: async () => credential } : {});
  const { manifest } = await client.getManifest(tag);
  const config = JSON.parse((await client.getBlob(manifest.config.digest)).toString("utf8")) as ImageConfig;
  const files = new Map<string, FsEntry>();
  for (const layer of manifest.layers) {
    for (const e of await readLayer(await client.getBlob(layer.digest))) {
      const slash = e.path.lastIndexOf("/");
      const dir = slash < 0 ? "" : e.path.slice(0, slash);
      const name = e.path.slice(slash + 1);
      if (name === ".wh..wh..opq") {
        for (const p of [...files.keys()]) if (p.startsWith(`${dir}/`)) files.delete(p);
        continue;
      }
      if (name.startsWith(".wh.")) {
        const gone = `${dir ? `${dir}/` : ""}${name.slice(4)}`;
        for (const p of [...files.keys()]) if (p === gone || p.startsWith(`${gone}/`)) files.delete(p);
        continue;
      }
      if (e.path === "") continue;
      if (e.type !== "directory") for (const p of [...files.keys()]) if (p.startsWith(`${e.path}/`)) files.delete(p);
      const { mtime: _m, path: _p, size: _s, ...meta } = e;
      files.set(e.path, meta);
    }
  }
  return { files, config, configDigest: manifest.config.digest, layers: manifest.layers.length };
}

/** The paths of a and b that differ, with both sides: empty when the filesystems are equal. */
export function fsDifferences(a: Map<string, FsEntry>, b: Map<string, FsEntry>): string[] {
  const out: string[] = [];
  for (const p of new Set([...a.keys(), ...b.keys()])) {
    const x = JSON.stringify(a.get(p) ?? null);
    const y = JSON.stringify(b.get(p) ?? null);
    if (x !== y) out.push(`${p}: ${x} vs ${y}`);
  }
  return out.sort();
}

/** A config without what differs between any two builds (times, the build container's hostname); kiln's labels are the commit's, and compared. */
export function comparableConfig(c: ImageConfig): unknown {
  const labels = { ...c.config?.Labels };
  // Docker-format configs carry the build container's id as Hostname: a new one every build.
  const { Hostname: _hostname, ...config } = c.config ?? {};
  return {
    architecture: c.architecture,
    os: c.os,
    config: { ...config, Labels: labels },
    layers: c.rootfs.diff_ids.length,
    history: (c.history ?? []).map((h) => ({
      empty_layer: h.empty_layer ?? false,
      // A secret mount's id is keyed on an HMAC under the volume's own key (secrets/cache-key.ts): each kilnd writes its own.
      step: /\bCOPY\b/.test(h.created_by ?? "") && !h.empty_layer ? "COPY" : h.created_by?.includes("#(nop) LABEL") ? "LABEL" : h.created_by?.replace(/(id=[^,\s]+\.kiln-)[0-9a-f]{16}\b/g, "$1<digest>"),
    })),
  };
}

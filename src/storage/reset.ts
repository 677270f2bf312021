// The reset: when the volume passes the threshold and pruning did not bring it back, container
// storage is wiped (podman system reset) and the next build is a cold one. Build records, logs
// and git caches are on the volume outside container storage and stay.
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { cli } from "../podman/cli.js";
import { errorSummary } from "../process/exec.js";
import { placeContainerState, type StorageLayout } from "../podman/storage-config.js";

export async function resetStorage(layout: StorageLayout, env: Record<string, string>, tmpRoot: string, keepTmp: ReadonlySet<string>, snapshotsDir: string): Promise<void> {
  const cacheMountDir = layout.cacheMountDir;
  const r = await cli.systemReset(env);
  if (r.exitCode !== 0) throw new Error(`podman system reset failed: ${errorSummary(r)}`);
  // kiln's cache mounts live in the storage root too; podman does not know them.
  await rm(cacheMountDir, { recursive: true, force: true });
  await mkdir(cacheMountDir, { recursive: true });
  // kiln's base layers: storage's images that used them are gone (the directory stays, storage
  // needs it to start).
  await rm(layout.baseLayerDir, { recursive: true, force: true });
  await mkdir(layout.baseLayerDir, { recursive: true });
  // The fast path's snapshots of its own steps stand on images the reset removed.
  await rm(snapshotsDir, { recursive: true, force: true });
  // The reset removed the link to the containers' tmpfs directory, and what it held is stale.
  if (layout.containersDir) await rm(layout.containersDir, { recursive: true, force: true });
  await placeContainerState(layout);
  for (const d of await readdir(tmpRoot).catch(() => [] as string[])) {
    if (!keepTmp.has(d)) await rm(join(tmpRoot, d), { recursive: true, force: true });
  }
}

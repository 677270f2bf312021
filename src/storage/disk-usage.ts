// How full the volume is (check-disk-space), and what container storage holds (podman).
import checkDiskSpaceModule from "check-disk-space";
import { statfs } from "node:fs/promises";
import { cli } from "../podman/cli.js";

// The package's types describe a CommonJS default export, while Node loads its ESM build, whose
// default export is the function itself: accept either shape.
type CheckDiskSpace = typeof checkDiskSpaceModule.default;
const checkDiskSpace: CheckDiskSpace =
  (checkDiskSpaceModule as unknown as { default?: CheckDiskSpace }).default ?? (checkDiskSpaceModule as unknown as CheckDiskSpace);

export interface VolumeUsage {
  totalBytes: number;
  freeBytes: number;
  usedPercent: number;
}

/**
 * Size and free space (available to kilnd) from check-disk-space; the used share as df reports
 * it, used / (used + available), so that blocks reserved for root do not count as used (on
 * some hosts they are most of the disk).
 */
export async function volumeUsage(dir: string): Promise<VolumeUsage> {
  const [{ size, free }, st] = await Promise.all([checkDiskSpace(dir), statfs(dir)]);
  const used = (st.blocks - st.bfree) * st.bsize;
  const usable = used + st.bavail * st.bsize;
  return { totalBytes: size, freeBytes: free, usedPercent: usable > 0 ? (used / usable) * 100 : 0 };
}

export interface StorageContents {
  images: number;
  /** podman's own sum of image sizes: a layer shared by images counts once per image. */
  imagesBytes: number;
  containers: number;
}

export async function storageContents(env: Record<string, string>): Promise<StorageContents> {
  const r = await cli.systemDf(env);
  const out: StorageContents = { images: 0, imagesBytes: 0, containers: 0 };
  if (r.exitCode !== 0) return out;
  for (const line of r.stdout.split("\n")) {
    if (!line.trim()) continue;
    const row = JSON.parse(line) as { Type: string; Total: number; Size: number };
    if (row.Type === "Images") {
      out.images = row.Total;
      out.imagesBytes = row.Size;
    } else if (row.Type === "Containers") out.containers = row.Total;
  }
  return out;
}

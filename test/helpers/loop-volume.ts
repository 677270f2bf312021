// A real, small volume: an ext4 image file loop-mounted, to see what happens when a disk fills.
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { unmountBelow } from "./tmp.js";

export interface LoopVolume {
  mountPoint: string;
  unmount(): void;
}

/** Makes and mounts an ext4 volume of sizeMiB, or says why it cannot (undefined + reason). */
export function mountLoopVolume(dir: string, sizeMiB: number): LoopVolume | string {
  const image = join(dir, "volume.img");
  const mountPoint = join(dir, "volume");
  mkdirSync(mountPoint, { recursive: true });
  try {
    execFileSync("truncate", ["-s", `${sizeMiB}M`, image]);
    // -m 0: no blocks reserved for root, so the numbers are the volume's own.
    execFileSync("mkfs.ext4", ["-q", "-m", "0", image]);
    execFileSync("mount", ["-o", "loop", image, mountPoint]);
  } catch (e) {
    return `loop mounts are not possible here: ${(e as Error).message.split("\n")[0]}`;
  }
  return {
    mountPoint,
    unmount() {
      unmountBelow(mountPoint); // podman's overlay mounts first, then the volume itself
    },
  };
}

// Every podman, buildah and runc call kilnd makes outside a build's own processes, one named
// function each: the storage policy (src/storage/) and the build's housekeeping decide when,
// this module says how. A build's `buildah bud` and `podman push` stream through builds/exec.ts.
import { exec, type ExecResult } from "../process/exec.js";

type Env = Record<string, string>;

const SHORT_MS = 30_000;
const LONG_MS = 120_000;

export interface PodmanImage {
  Id: string;
  Names?: string[] | null;
  Size: number;
  Created: number;
  Labels?: Record<string, string> | null;
}

/**
 * podman's answer that storage holds no such image ("image not known": exit code 125 from image
 * inspect, 1 from rmi), told apart from every other failure: a podman killed mid-answer has not
 * said the image is gone.
 */
export function imageUnknown(r: ExecResult): boolean {
  return r.exitCode !== 0 && !r.signal && /image not known|no such image/i.test(r.stderr);
}

export interface RuncContainer {
  id: string;
  bundle: string;
  status: string;
}

export const cli = {
  version: (env: Env) => exec("podman", ["version", "--format", "{{.Client.Version}}"], { env, timeoutMs: 10_000 }),
  info: (env: Env) => exec("podman", ["info", "--format", "json"], { env, timeoutMs: SHORT_MS }),
  systemDf: (env: Env) => exec("podman", ["system", "df", "--format", "{{json .}}"], { env, timeoutMs: SHORT_MS }),
  systemReset: (env: Env) => exec("podman", ["system", "reset", "--force"], { env, timeoutMs: 300_000 }),

  async images(env: Env): Promise<PodmanImage[]> {
    const r = await exec("podman", ["images", "--format", "json"], { env, timeoutMs: 60_000 });
    if (r.exitCode !== 0) throw new Error(`podman images failed: ${r.stderr.trim().split("\n").at(-1) ?? ""}`);
    return (JSON.parse(r.stdout || "[]") as PodmanImage[] | null) ?? [];
  },
  rmi: (env: Env, id: string) => exec("podman", ["rmi", "--", id], { env, timeoutMs: LONG_MS }),
  /** Takes a name off its image, which stays (rmi of an image's last name removes it, even when later steps' images were built on it). */
  untag: (env: Env, name: string) => exec("podman", ["untag", "--", name, name], { env, timeoutMs: LONG_MS }),
  imagePrune: (env: Env) => exec("podman", ["image", "prune", "--force"], { env, timeoutMs: LONG_MS }),
  /** The image's size in storage, in bytes; 0 when unknown. */
  async imageSize(env: Env, image: string): Promise<number> {
    const r = await exec("podman", ["image", "inspect", "--format", "{{.Size}}", image], { env, timeoutMs: SHORT_MS });
    const n = Number(r.stdout.trim());
    return r.exitCode === 0 && Number.isFinite(n) ? n : 0;
  },

  /** podman image inspect, as JSON. */
  imageInspect: (env: Env, image: string) => exec("podman", ["image", "inspect", "--format", "json", "--", image], { env, timeoutMs: SHORT_MS }),
  /** Mounts the image's filesystem read-only (counted: every mount needs its unmount) and prints where. */
  imageMount: (env: Env, image: string) => exec("podman", ["image", "mount", "--", image], { env, timeoutMs: SHORT_MS }),
  imageUnmount: (env: Env, image: string) => exec("podman", ["image", "unmount", "--", image], { env, timeoutMs: SHORT_MS }),
  imageUnmountAll: (env: Env) => exec("podman", ["image", "unmount", "--all"], { env, timeoutMs: SHORT_MS }),

  /** Removes buildah working containers that interrupted builds left in storage. */
  buildahRmAll: (env: Env) => exec("buildah", ["rm", "--all"], { env, timeoutMs: SHORT_MS }),
  /** buildah inspect of an image, as JSON: its Docker-format config too (the SHELL, which podman's inspect leaves out). */
  buildahImageInspect: (env: Env, image: string) => exec("buildah", ["inspect", "--type", "image", "--", image], { env, timeoutMs: SHORT_MS }),
  /** buildah tag: lighter than podman's. */
  buildahTag: (env: Env, image: string, names: string[]) => exec("buildah", ["tag", image, ...names], { env, timeoutMs: SHORT_MS }),

  async runcList(env: Env): Promise<RuncContainer[]> {
    const r = await exec("runc", ["list", "--format", "json"], { env, timeoutMs: 5000 });
    if (r.exitCode !== 0 || !r.stdout.trim()) return [];
    try {
      return (JSON.parse(r.stdout) as RuncContainer[] | null) ?? [];
    } catch {
      return [];
    }
  },
  runcKill: (env: Env, id: string): Promise<ExecResult> => exec("runc", ["kill", "--", id, "KILL"], { env, timeoutMs: 5000 }),
  runcDelete: (env: Env, id: string): Promise<ExecResult> => exec("runc", ["delete", "--force", "--", id], { env, timeoutMs: 5000 }),
};

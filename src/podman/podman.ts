// The podman side of kilnd: the environment every podman, buildah and runc call runs in, and
// the housekeeping calls that are not part of one build.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { errorSummary } from "../process/exec.js";
import { cli, imageUnknown } from "./cli.js";
import { writeFileAtomic } from "../util/fs-atomic.js";
import { mountPoints } from "../util/mounts.js";
import type { StorageLayout } from "./storage-config.js";
import { createBaseLayerStore } from "../images/layer-store.js";
import { sha256 } from "../registry/client.js";
import { bigDataFile } from "./stored-image.js";

export interface PodmanOptions {
  layout: StorageLayout;
  /** Environment variables passed through from kilnd's own (PATH, HOME, proxies, CA bundles). */
  baseEnv: Record<string, string>;
}

export function createPodman(opts: PodmanOptions) {
  const env = (tmpDir?: string): Record<string, string> => ({
    ...opts.baseEnv,
    ...opts.layout.env,
    ...(tmpDir ? { TMPDIR: tmpDir } : {}),
  });

  let versionCache: Promise<string> | undefined;
  const mounts = new Map<string, { path: Promise<string>; users: number }>();
  /** Image ID → its Docker-format SHELL (dockerShell). */
  const shells = new Map<string, Promise<string[] | undefined>>();
  const versionFile = join(opts.layout.confDir, "podman-version.json");

  /** `podman version`, remembered on the volume for as long as the podman binary is the same file. */
  async function askVersion(): Promise<string> {
    const bin = await findOnPath("podman", env().PATH ?? "");
    const st = bin ? await stat(bin).catch(() => undefined) : undefined;
    const key = st ? `${bin}:${st.ino}:${st.size}:${st.mtimeMs}` : undefined;
    if (key) {
      const saved = await readFile(versionFile, "utf8").then((t) => JSON.parse(t) as { key: string; version: string }, () => undefined);
      if (saved?.key === key && saved.version) return saved.version;
    }
    const r = await cli.version(env());
    if (r.exitCode !== 0) throw new Error(`podman version failed: ${errorSummary(r)}`);
    const version = r.stdout.trim();
    if (key) await writeFileAtomic(versionFile, JSON.stringify({ key, version })).catch(() => undefined);
    return version;
  }

  return {
    layout: opts.layout,
    /** The FROM images' layers as kiln unpacks them for buildah's pull. */
    baseLayers: createBaseLayerStore(opts.layout.baseLayerDir, opts.layout.graphRoot),
    env,
    /** Removes buildah working containers that interrupted builds left in storage. */
    async removeWorkingContainers(): Promise<void> {
      await cli.buildahRmAll(env());
    },
    /** Tags an image with more names (buildah tag: lighter than podman's). */
    async tag(image: string, names: string[]): Promise<boolean> {
      return (await cli.buildahTag(env(), image, names)).exitCode === 0;
    },
    /**
     * The image's full ID, layers (diff IDs) and config, or undefined when storage has no such
     * image. Any other failure throws: a podman killed mid-answer (a signal to kilnd's process
     * group) has not said the image is gone.
     */
    async inspectImage(image: string): Promise<LocalImage | undefined> {
      const r = await cli.imageInspect(env(), image);
      if (imageUnknown(r)) return undefined;
      if (r.exitCode !== 0) throw new Error(`podman image inspect ${image.slice(0, 19)} failed: ${errorSummary(r)}`);
      const [i] = JSON.parse(r.stdout || "[]") as { Id: string; RootFS?: { Layers?: string[] }; Config?: LocalImage["config"]; History?: LocalImage["history"] }[];
      return i ? { id: i.Id, layers: i.RootFS?.Layers ?? [], config: i.Config ?? {}, history: i.History ?? [] } : undefined;
    },
    /**
     * The image's config as storage keeps it, byte for byte: what a push of it uploads (its
     * digest is the image's ID; storage names the file by the base64 of that key).
     */
    async storedConfig(id: string): Promise<Buffer> {
      const key = `sha256:${id.replace(/^sha256:/, "")}`;
      const bytes = await readFile(bigDataFile(opts.layout.graphRoot, key.slice(7), key));
      if (sha256(bytes) !== key) throw new Error(`the config storage keeps for image ${key.slice(7, 19)} is not the image's`);
      return bytes;
    },
    /**
     * The SHELL of the image's Docker-format config (buildah runs shell-form RUN steps with it);
     * undefined when it sets none. An image ID names its config, so the answer is kept.
     */
    dockerShell(imageId: string): Promise<string[] | undefined> {
      let known = shells.get(imageId);
      if (!known) {
        known = cli.buildahImageInspect(env(), imageId).then((r) => {
          if (r.exitCode !== 0) throw new Error(`buildah inspect failed: ${errorSummary(r)}`);
          const shell = (JSON.parse(r.stdout) as { Docker?: { config?: { Shell?: string[] | null } } }).Docker?.config?.Shell;
          return shell && shell.length > 0 ? shell : undefined;
        });
        shells.set(imageId, known);
        known.catch(() => shells.delete(imageId));
      }
      return known;
    },
    /**
     * Mounts the image read-only and says where. The mount is kept after unmountImage (the next
     * fast build of the project mounts the same image: 100-150 ms saved), until
     * unmountIdleImages: before the prune, the reset and kilnd's exit.
     */
    async mountImage(image: string): Promise<string> {
      let m = mounts.get(image);
      // A kept mount someone else took down (a podman image unmount, a reset) is made again.
      if (m && m.users === 0 && !(await isMountPoint(await m.path.catch(() => "")))) {
        mounts.delete(image);
        m = undefined;
      }
      if (!m) {
        const path = cli.imageMount(env(), image).then((r) => {
          if (r.exitCode !== 0 || !r.stdout.trim()) throw new Error(`podman image mount failed: ${errorSummary(r)}`);
          return r.stdout.trim();
        });
        m = { path, users: 0 };
        mounts.set(image, m);
        path.catch(() => mounts.delete(image));
      }
      m.users++;
      try {
        return await m.path;
      } catch (e) {
        m.users--;
        throw e;
      }
    },
    /** This build is done with the image (it stays mounted for the next one). */
    async unmountImage(image: string): Promise<void> {
      const m = mounts.get(image);
      if (m) m.users = Math.max(0, m.users - 1);
    },
    /** After a killed kilnd: no image stays mounted for a fast path that is gone. */
    async unmountAllImages(): Promise<void> {
      mounts.clear();
      await cli.imageUnmountAll(env());
    },
    /** Unmounts every image no build is using now. */
    async unmountIdleImages(): Promise<void> {
      for (const [image, m] of [...mounts]) {
        if (m.users > 0) continue;
        mounts.delete(image);
        await cli.imageUnmount(env(), image);
      }
    },
    /** The image's size in storage, in bytes (what a push sends at most); 0 when unknown. */
    imageSize: (image: string): Promise<number> => cli.imageSize(env(), image),
    version(): Promise<string> {
      versionCache ??= askVersion().catch(() => {
        versionCache = undefined;
        return "unknown";
      });
      return versionCache;
    },
  };
}

export type Podman = ReturnType<typeof createPodman>;

export interface LocalImage {
  /** The full ID (sha256 hex, no prefix). */
  id: string;
  layers: string[];
  config: { Env?: string[]; User?: string; WorkingDir?: string; Shell?: string[] };
  history: { created_by?: string; empty_layer?: boolean }[];
}

/** The variables kilnd passes on to git and podman; the rest of its environment stays home. */
export function passThroughEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const keep = /^(PATH|HOME|USER|LANG|LC_[A-Z]+|TZ|SSL_CERT_FILE|SSL_CERT_DIR|GIT_SSL_CAINFO|NODE_EXTRA_CA_CERTS|REGISTRY_AUTH_FILE|(?:HTTPS?|NO|ALL)_PROXY|(?:https?|no|all)_proxy|SSH_AUTH_SOCK)$/;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && keep.test(k)) out[k] = v;
  out.PATH ??= "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  return out;
}

async function isMountPoint(path: string): Promise<boolean> {
  return path !== "" && (await mountPoints()).includes(path);
}

async function findOnPath(name: string, path: string): Promise<string | undefined> {
  for (const dir of path.split(":").filter(Boolean)) {
    const candidate = join(dir, name);
    if (await stat(candidate).then((s) => s.isFile(), () => false)) return candidate;
  }
  return undefined;
}

// kiln owns its container configuration: storage.conf (graphroot on the volume, runroot on
// tmpfs), containers.conf and registries.conf, written under --data at start and handed to every
// podman, buildah and runc call through the environment, never relying on machine-wide files.
import { createHash } from "node:crypto";
import { cp, lstat, mkdir, readFile, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../util/fs-atomic.js";

export interface StorageLayout {
  graphRoot: string;
  /** kiln's base layer store (images/layer-store.ts): storage's additional layer store, on the volume. */
  baseLayerDir: string;
  /** Where RUN --mount=type=cache directories live: in container storage, shared by all builds. */
  cacheMountDir: string;
  runRoot: string;
  /** Where builds keep their secrets while they run: on tmpfs, or undefined when there is none. */
  secretsRoot: string | undefined;
  /** Where containers/storage keeps containers (graphroot/overlay-containers points there): tmpfs. */
  containersDir: string | undefined;
  confDir: string;
  env: Record<string, string>;
}

export interface StorageConfigOptions {
  dataDir: string;
  insecureRegistries: readonly string[];
  /** fuse-overlayfs or the like; unset means the kernel's overlay, as it should be. */
  overlayMountProgram?: string;
}

const toml = (s: string) => JSON.stringify(s);

/** The first tmpfs among the usual places, for podman's runtime state (lost on reboot, as it should be). */
async function tmpfsDir(): Promise<string | undefined> {
  let mounts = "";
  try {
    mounts = await readFile("/proc/mounts", "utf8");
  } catch {
    return undefined;
  }
  const tmpfs = new Set(
    mounts
      .split("\n")
      .map((l) => l.split(" "))
      .filter((f) => f[2] === "tmpfs")
      .map((f) => f[1]),
  );
  return ["/run", "/dev/shm", "/tmp"].find((d) => tmpfs.has(d));
}

export async function writeStorageConfig(opts: StorageConfigOptions): Promise<StorageLayout> {
  const confDir = join(opts.dataDir, "conf");
  const graphRoot = join(opts.dataDir, "storage");
  const baseLayerDir = join(opts.dataDir, "base-layers");
  // One runroot per data directory, short enough for the unix socket paths podman puts under it.
  const tag = createHash("sha256").update(opts.dataDir).digest("hex").slice(0, 12);
  const tmpfs = await tmpfsDir();
  const runRoot = tmpfs ? join(tmpfs, `kiln-${tag}`) : join(opts.dataDir, "run");
  await Promise.all([mkdir(confDir, { recursive: true }), mkdir(graphRoot, { recursive: true }), mkdir(baseLayerDir, { recursive: true }), mkdir(runRoot, { recursive: true, mode: 0o700 })]);

  const storage = [
    "# Written by kilnd at start; edits are overwritten.",
    "[storage]",
    'driver = "overlay"',
    `graphroot = ${toml(graphRoot)}`,
    `runroot = ${toml(runRoot)}`,
    "",
    "[storage.options]",
    // The FROM images' layers as kiln unpacks them, side by side, before buildah pulls.
    `additionallayerstores = [${toml(baseLayerDir)}]`,
    "",
    "[storage.options.overlay]",
    // metacopy makes builds several times slower (measured); keep it off.
    'mountopt = "nodev"',
    ...(opts.overlayMountProgram ? [`mount_program = ${toml(opts.overlayMountProgram)}`] : []),
    "",
  ].join("\n");
  const containers = [
    "# Written by kilnd at start; edits are overwritten.",
    "[containers]",
    // The default rlimits cannot be set on our machines (setrlimit: Operation not permitted).
    "default_ulimits = []",
    "",
    "[engine]",
    // crun fails on cgroups v1 hybrid hosts; runc works.
    'runtime = "runc"',
    'events_logger = "none"',
    "",
  ].join("\n");
  const registries = [
    "# Written by kilnd at start from --insecure-registry; edits are overwritten.",
    // Never guess a registry for a short name: images are named in full.
    "unqualified-search-registries = []",
    "",
    ...opts.insecureRegistries.flatMap((r) => ["[[registry]]", `location = ${toml(r)}`, "insecure = true", ""]),
  ].join("\n");
  const files = {
    storage: join(confDir, "storage.conf"),
    containers: join(confDir, "containers.conf"),
    registries: join(confDir, "registries.conf"),
  };
  await Promise.all([
    writeFileAtomic(files.storage, storage),
    writeFileAtomic(files.containers, containers),
    writeFileAtomic(files.registries, registries),
  ]);
  return {
    graphRoot,
    baseLayerDir,
    cacheMountDir: join(graphRoot, "kiln-cache-mounts"),
    runRoot,
    secretsRoot: tmpfs ? join(tmpfs, `kiln-${tag}-secrets`) : undefined,
    containersDir: tmpfs ? join(tmpfs, `kiln-${tag}-containers`) : undefined,
    confDir,
    env: {
      CONTAINERS_STORAGE_CONF: files.storage,
      CONTAINERS_CONF: files.containers,
      CONTAINERS_REGISTRIES_CONF: files.registries,
    },
  };
}

/**
 * Puts the containers' own directories on tmpfs: buildah copies a RUN step's secrets into its
 * working container's directory (graphroot/overlay-containers/ID/userdata/secrets), which would
 * put them on the volume. Layers stay on the volume; only the small per-container state moves,
 * and it lives no longer than the build's containers do. Called at start and after a reset.
 */
export async function placeContainerState(layout: StorageLayout): Promise<void> {
  if (!layout.containersDir) return;
  const link = join(layout.graphRoot, "overlay-containers");
  await mkdir(layout.containersDir, { recursive: true, mode: 0o700 });
  const st = await lstat(link).catch(() => undefined);
  if (st?.isSymbolicLink()) return;
  if (st?.isDirectory()) {
    // Storage from before this layout (or a reset's fresh one): move what it holds.
    await cp(link, layout.containersDir, { recursive: true, force: true });
    await rm(link, { recursive: true, force: true });
  }
  await symlink(layout.containersDir, link);
}

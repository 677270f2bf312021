// The steps after the COPY kiln starts from, run by kiln as buildah would run them, without a
// build: the image below the COPY (the step before it, still in podman's storage from the last
// full build) mounted read-only; the COPY's layer written out as the first upper directory; each
// RUN on an overlay of everything below it, run by runc with the spec run-spec.ts makes (its cache
// mounts bound from the cache-mount directory buildah uses, under buildah's lock when
// sharing=locked); each later COPY's layer (made by kiln) written out as an upper of its own;
// each RUN's upper directory read back as its layer (upper.ts) and compressed while the next step
// runs. Mount points the image lacks, a user it cannot resolve, a failing step: refusals, and the
// full build runs (and says what really failed).
import { randomBytes } from "node:crypto";
import { chownSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, posix } from "node:path";
import { exec, errorSummary } from "../process/exec.js";
import type { Podman } from "../podman/podman.js";
import { createLayerWriter, type Layer, type LayerEntry } from "./layer.js";
import type { CacheMount, RunStep } from "./plan.js";
import { FastPathRefused } from "./refused.js";
import { checkMountPoints, checkMountTarget, removeMountTarget, resolveUser, runEnv, runtimeSpec } from "./run-spec.js";
import { readUpper, writeEntries } from "./upper.js";

export interface ParentImage {
  /** The full image ID of the step before the final COPY (or, with layers, of the one they stand on). */
  id: string;
  /**
   * Upper directories of steps kiln ran itself in an earlier build, bottom first, stacked on the
   * image (base.ts keeps them): what the image below this COPY became when kiln last started
   * from an earlier COPY. Their layers are the pushed image's below this COPY.
   */
  layers?: string[];
  env: string[];
  user: string;
  workdir: string;
  /** The image's SHELL (Docker-format builds: buildah runs shell-form RUN steps with it). */
  shell?: string[];
}

/**
 * A step kiln runs: a RUN, or a later COPY whose layer kiln has made already (chownByName: its
 * --chown names a user or group, resolved when the last full build made it: the owner holds
 * only while no step kiln runs before it writes /etc/passwd or /etc/group).
 */
export type StepToRun = RunStep | { layer: Layer; chownByName?: string };

/** A layer's entry that may change who a user or group name is (the files, their whiteouts, an opaque or replaced /etc), if any. */
function accountsEntry(entries: readonly LayerEntry[]): string | undefined {
  for (const { header: h } of entries) {
    const name = h.name.replace(/\/+$/, "");
    if (/^(etc\/(\.wh\.)?(passwd|group)|etc\/\.wh\.\.wh\.\.opq|\.wh\.etc)$/.test(name) || (name === "etc" && h.type !== "directory")) return `/${name}`;
  }
  return undefined;
}

/** The lock file buildah 1.28 holds in a cache mount's directory while a sharing=locked step runs. */
const CACHE_LOCK_FILE = "buildah-cache-lockfile";

export interface RunStepsInput {
  podman: Pick<Podman, "mountImage" | "unmountImage" | "env">;
  parent: ParentImage;
  /** The final COPY's layer, as kiln made it. */
  copy: readonly LayerEntry[];
  /**
   * The COPY's destination directory, when copy has no entries for it and the directories above
   * (an earlier stage's COPY, whose layer is not in the registry): taken from the image below.
   */
  copyDir?: string;
  /** false: the steps' layers are not needed (an earlier stage's), only afterwards. */
  layers?: boolean;
  /** Called with the stage's whole filesystem after the last step, mounted read-only. */
  afterwards?(root: string): Promise<void>;
  steps: readonly StepToRun[];
  /** buildah's cache-mount directory ($TMPDIR/buildah-cache of every build): RUN --mount=type=cache sources. */
  cacheDir: string;
  /** A directory of this build's own, on the volume (overlay's upper and work directories must not be on overlay), removed with the build's. */
  dir: string;
  /** Runs `runc <args>` as a process of the build (logged, stopped by a cancel), holding the lock files' locks. */
  runc(args: string[], locks: string[]): Promise<{ exitCode: number; stderrTail: string[] }>;
  /** A file on tmpfs holding a secret for a RUN's secret mount, with the mount's mode and owner. */
  secretFile(id: string, mode: number, uid: number, gid: number): Promise<string>;
  say(line: string): void;
  buildId: string;
  maxBytes: number;
  signal: AbortSignal;
}

export interface StepsRun {
  /** The steps' layers, in order (none with layers: false). */
  layers: Layer[];
  /** The upper directories: the COPY's, then each step's; bottom first. Left in i.dir. */
  uppers: string[];
}

export async function runSteps(i: RunStepsInput): Promise<StepsRun> {
  const env = i.podman.env();
  const mounted: string[] = [];
  const own = i.parent.layers ?? [];
  if (own.some((d) => !lstatSync(d, { throwIfNoEntry: false })?.isDirectory())) throw new FastPathRefused("a snapshot of kiln's own steps below the COPY is gone");
  const m0 = Date.now();
  const lower = await i.podman.mountImage(i.parent.id);
  i.say(`fast path: mounted the image below the COPY (${i.parent.id.slice(0, 12)}${own.length ? `, with ${own.length} layer${own.length === 1 ? "" : "s"} of kiln's own steps on it` : ""}) in ${Date.now() - m0} ms`);
  const layers: Promise<Layer>[] = [];
  try {
    const u0 = join(i.dir, "u0");
    mkdirSync(u0, { recursive: true });
    // Bottom first: overlay's lowerdir lists the top first (reversed below).
    const below = [lower, ...own, u0];
    /** The first entry of a RUN's layer (this build's) that may change who a name is (accountsEntry). */
    let accounts: string | undefined;
    // copyDir is a rebuilt stage's, whose parent stands on no snapshots: the image alone is below it.
    await writeEntries(u0, i.copyDir !== undefined ? [...ancestorsIn(lower, i.copyDir), ...i.copy] : i.copy);
    for (const [n, step] of i.steps.entries()) {
      i.signal.throwIfAborted();
      const [upper, work, root, bundle] = ["u", "w", "m", "b"].map((x) => join(i.dir, `${x}${n + 1}`)) as [string, string, string, string];
      mkdirSync(upper, { recursive: true });
      if ("layer" in step) {
        if (step.chownByName !== undefined && accounts) throw new FastPathRefused(`a COPY --chown=${step.chownByName} comes after a RUN that wrote ${accounts} (kiln learned the owner from the last full build)`);
        // A later COPY: its layer, made from the context, is the next upper directory.
        await writeEntries(upper, step.layer.entries);
        layers.push(Promise.resolve(step.layer));
        below.push(upper);
        continue;
      }
      for (const d of [work, root, bundle]) mkdirSync(d, { recursive: true });
      const lowerdir = [...below].reverse().join(":");
      await mount(["-t", "overlay", "overlay", "-o", `lowerdir=${lowerdir},upperdir=${upper},workdir=${work},redirect_dir=off,index=off,metacopy=off,xino=off`, root], env, i.signal);
      mounted.push(root);
      let hadContainerEnv: boolean;
      try {
        checkMountPoints(root);
        hadContainerEnv = exists(join(root, "run/.containerenv"));
        const caches = step.cache.map((c) => {
          checkMountTarget(root, c.target, "directory");
          return { source: cacheSource(i.cacheDir, c), target: c.target, locked: c.locked };
        });
        const secrets = await Promise.all(
          step.secrets.map(async (s) => {
            checkMountTarget(root, s.target, "file");
            return { source: await i.secretFile(s.id, s.mode, s.uid, s.gid), target: s.target };
          }),
        );
        const user = resolveUser(root, step.user ?? i.parent.user);
        const cwd = i.parent.workdir || "/";
        if (!lstatSync(join(root, cwd), { throwIfNoEntry: false })?.isDirectory()) throw new FastPathRefused(`the working directory ${cwd} is not a directory in the image`);
        const hostname = randomBytes(6).toString("hex");
        const files = writeBundleFiles(bundle, hostname);
        const args = step.exec ?? [...(step.shell ?? i.parent.shell ?? ["/bin/sh", "-c"]), step.command];
        const spec = runtimeSpec({ rootfs: root, args, cwd: posix.normalize(cwd), env: runEnv(i.parent.env, step.env, step.args, user, hostname), user, hostname, ...files, caches, secrets });
        writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));
        i.say(`fast path: RUN ${step.command}`);
        const locks = caches.filter((c) => c.locked).map((c) => join(c.source, CACHE_LOCK_FILE));
        const r0 = Date.now();
        const r = await i.runc(["run", "--bundle", bundle, `kiln-${i.buildId}-${n + 1}`], locks);
        if (r.exitCode !== 0) throw new FastPathRefused(`RUN ${step.command.slice(0, 80)} exited with ${r.exitCode} (${errorSummary(r)}) when kiln ran it`);
        i.say(`fast path: step ${n + 1} ran in ${Date.now() - r0} ms`);
        for (const m of [...caches, ...secrets]) removeMountTarget(root, m.target);
      } finally {
        if (await umount(root, env)) mounted.pop();
      }
      // runc made /run/.containerenv as a mount point; buildah leaves none in the layer.
      if (!hadContainerEnv) rmSync(join(upper, "run/.containerenv"), { force: true });
      if (i.layers !== false) {
        // The layer's pieces compress while the upper directory is read and while later steps run.
        const t0 = Date.now();
        const writer = createLayerWriter();
        const read = await readUpper(upper, env, i.maxBytes, i.signal, writer.add);
        i.say(`fast path: step ${n + 1}'s layer read in ${Date.now() - t0} ms (${read.entries.length} entries, ${read.bytes} bytes)`);
        accounts ??= accountsEntry(read.entries);
        // Nothing reads a RUN layer's file bodies once the writer has them (node-api's npm ci: 45 MB).
        const headers = read.entries.map(({ header }) => ({ header }));
        const bytes = read.bytes;
        const made = writer.finish().then((c) => {
          i.say(`fast path: step ${n + 1}'s layer compressed ${Date.now() - t0} ms after its step (${c.gz.length} bytes)`);
          return { ...c, entries: headers, files: headers.length, bytes };
        });
        made.catch(() => {});
        layers.push(made);
      }
      below.push(upper);
    }
    if (i.afterwards) {
      const root = join(i.dir, "all");
      mkdirSync(root, { recursive: true });
      await mount(["-t", "overlay", "overlay", "-o", `ro,lowerdir=${[...below].reverse().join(":")},redirect_dir=off,index=off,metacopy=off,xino=off`, root], env, i.signal);
      mounted.push(root);
      try {
        await i.afterwards(root);
      } finally {
        if (await umount(root, env)) mounted.pop();
      }
    }
    return { layers: await Promise.all(layers), uppers: below.slice(1 + own.length) };
  } finally {
    for (const m of [...mounted].reverse()) if (await umount(m, env)) mounted.splice(mounted.indexOf(m), 1);
    await i.podman.unmountImage(i.parent.id).catch(() => {});
    // i.dir is left to the build's own clean-up, after its result: removing a large upper
    // directory here (11,000 files of a `npm ci`) held the event loop and the push for 1.7 s.
  }
}

/**
 * The directories from the image's root to dir as the image below has them (their copies in the
 * COPY's layer); one it lacks is made as buildah makes it, 0755 and root's.
 */
function ancestorsIn(lower: string, dir: string): LayerEntry[] {
  const parts = dir.split("/").filter(Boolean);
  const out: LayerEntry[] = [];
  for (let n = 1; n <= parts.length; n++) {
    const path = parts.slice(0, n).join("/");
    const st = lstatSync(join(lower, path), { throwIfNoEntry: false });
    if (st && !st.isDirectory()) throw new FastPathRefused(`/${path} in the image below the stage's COPY is not a directory`);
    out.push({ header: { name: `${path}/`, type: "directory", mode: st ? st.mode & 0o7777 : 0o755, uid: st?.uid ?? 0, gid: st?.gid ?? 0, mtime: st?.mtime ?? new Date() } });
  }
  return out;
}

/**
 * A cache mount's directory, made as buildah makes it: <cache dir>/<source>, each missing
 * directory with the mount's mode (less the umask) and owner; one already there is left as it is.
 */
function cacheSource(cacheDir: string, c: CacheMount): string {
  let path = cacheDir;
  mkdirSync(cacheDir, { recursive: true, mode: 0o755 });
  for (const part of c.source.split("/")) {
    path = join(path, part);
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st && (st.isSymbolicLink() || !st.isDirectory())) throw new FastPathRefused(`the cache mount's directory ${c.source} is not a plain directory`);
    if (!st) {
      mkdirSync(path, { mode: c.mode & ~0o022 });
      chownSync(path, c.uid, c.gid);
    }
  }
  return path;
}

function writeBundleFiles(bundle: string, hostname: string) {
  const hostFile = (p: string) => {
    try {
      return readFileSync(p, "utf8");
    } catch {
      return "";
    }
  };
  const files = {
    hosts: join(bundle, "hosts"),
    resolvConf: join(bundle, "resolv.conf"),
    hostnameFile: join(bundle, "hostname"),
    containerEnv: join(bundle, "containerenv"),
  };
  writeFileSync(files.hosts, `${hostFile("/etc/hosts").trimEnd()}\n127.0.1.1 ${hostname}\n`);
  writeFileSync(files.resolvConf, hostFile("/etc/resolv.conf"));
  writeFileSync(files.hostnameFile, `${hostname}\n`);
  writeFileSync(files.containerEnv, 'engine="kiln"\n');
  return files;
}

async function mount(args: string[], env: Record<string, string>, signal: AbortSignal): Promise<void> {
  const r = await exec("mount", args, { env, timeoutMs: 30_000, signal });
  if (r.exitCode !== 0) throw new Error(`mount of a RUN step's overlay failed: ${errorSummary(r)}`);
}

async function umount(path: string, env: Record<string, string>): Promise<boolean> {
  return (await exec("umount", [path], { env, timeoutMs: 30_000 })).exitCode === 0;
}

function exists(path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
}

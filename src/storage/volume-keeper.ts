// Keeps the volume healthy for months on one disk: prunes superseded images after every full
// build (a fast-path build adds none), resets container storage when the volume passes the
// threshold (before a full build, after a prune and after a fast-path build), and knows whether
// overlay is native. Its operations run one at a time; a reset waits until no build is running.
import { rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { StorageLayout } from "../podman/storage-config.js";
import { checkOverlay, UNCHECKED, type OverlayStatus } from "./overlay-check.js";
import { volumeUsage, type VolumeUsage } from "./disk-usage.js";
import { kilnImagesOf, listImages, removeImages, selectForPrune, stageTagsOf, type ImageBuild, type KilnImage } from "./prune.js";
import { resetStorage } from "./reset.js";
import { spreadDirectories } from "./spread-dirs.js";

/** In the data directory: the storage directories carry ext4's top-directory flag (spread-dirs.ts). */
const SPREAD_NOTE = "kiln-top-dirs";

export interface KeeperOptions {
  dataDir: string;
  tmpRoot: string;
  /** kiln's snapshots of its own steps (they stand on images a reset removes): they go with it. */
  snapshotsDir: string;
  layout: StorageLayout;
  env: () => Record<string, string>;
  keepBuilds: number;
  resetThresholdPercent: number;
  logger: Logger;
  /** The newest successful build that gave each image of the project (all when undefined), by full image ID (kilnd's records). */
  imageBuilds(project?: string): ReadonlyMap<string, ImageBuild>;
  /** The images the fast path's bases stand on (a first build's prefix): their stage tags stay. */
  baseImages(project?: string): Promise<ReadonlySet<string>>;
  /** Builds holding a slot (running podman) right now. */
  runningBuilds(): number;
  /** Temp dirs of live builds, which a reset must leave alone. */
  liveTmpDirs(): Set<string>;
  /** Persists the reset count (it must outlive kilnd, which exits whenever the machine sleeps). */
  onReset(durationMs: number, bytesFreed: number): void;
  onPrune(images: number, bytesFreed: number): void;
  /** Before images are removed or storage is reset: nothing kiln keeps mounted may stand in the way. */
  releaseMounts(): Promise<void>;
  /**
   * After a prune removed images: removes what only their layers needed, the base layers no
   * image uses (images/layer-store.ts) and the notes of blobs pushed for layers storage no longer
   * has (registry/blob-notes.ts); how many of each went.
   */
  collectUnused(): Promise<{ baseLayers: number; blobNotes: number }>;
  /** The directories whose subdirectories are a build's large new trees (spread-dirs.ts). */
  spreadDirs: readonly string[];
}

export interface PruneOutcome {
  images: KilnImage[];
  bytesFreed: number;
  reset: boolean;
}

export class VolumeKeeper {
  overlay: OverlayStatus = UNCHECKED;
  private queue: Promise<unknown> = Promise.resolve();
  /** Whether the directories are known marked since start or the last reset (which makes them anew). */
  private spread = false;

  constructor(private readonly o: KeeperOptions) {}

  get keepBuilds(): number {
    return this.o.keepBuilds;
  }

  get resetThresholdPercent(): number {
    return this.o.resetThresholdPercent;
  }

  usage(): Promise<VolumeUsage> {
    return volumeUsage(this.o.dataDir);
  }

  /** Asks podman once; a storage that is not native overlay is said loudly, with the fix. */
  async checkOverlay(): Promise<OverlayStatus> {
    this.overlay = await checkOverlay(this.o.env());
    if (!this.overlay.native) {
      this.o.logger.error({ overlay: this.overlay }, `container storage is NOT on native overlay: builds will be slow. ${this.overlay.reason}. Fix: ${this.overlay.fix}`);
    } else {
      this.o.logger.info({ overlay: this.overlay }, "container storage is on native overlay");
    }
    return this.overlay;
  }

  /** The images kiln built, read between housekeeping passes (never in the middle of a removal). GetStorage only counts them: no records are read. */
  listImages(project?: string): Promise<KilnImage[]> {
    return this.serial(async () => kilnImagesOf(await listImages(this.o.env()), project));
  }

  /** Removes (or with dryRun lists) what the keep policy drops; then resets if still over the threshold. */
  prune(project: string | undefined, dryRun: boolean): Promise<PruneOutcome> {
    return this.serial(async () => {
      const rows = await listImages(this.o.env());
      const all = kilnImagesOf(rows, project, this.o.imageBuilds(project));
      const doomed = selectForPrune(all, this.o.keepBuilds);
      if (dryRun) return { images: doomed, bytesFreed: 0, reset: false };
      // Earlier stages' images stay as long as a kept image of their commit does, or a base stands on them (their tags go with it).
      const key = (p: string, commit: string) => `${p}/${commit}`;
      const kept = new Set(all.filter((i) => !doomed.includes(i)).map((i) => key(i.project, i.commit)));
      const inUse = await this.o.baseImages(project);
      const stageTags = stageTagsOf(rows).filter((t) => (!project || t.project === project) && !kept.has(key(t.project, t.commit)) && !inUse.has(t.id)).map((t) => t.name);
      const before = await this.usage();
      if (doomed.length || stageTags.length) await this.o.releaseMounts().catch(() => {});
      const failed = doomed.length || stageTags.length ? await removeImages(this.o.env(), doomed.map((i) => i.id), stageTags) : [];
      const after = await this.usage();
      const bytesFreed = Math.max(0, after.freeBytes - before.freeBytes);
      if (failed.length) this.o.logger.warn({ failed }, "some images could not be removed");
      // Only after a removal: a layer left unlinked (a cancelled build's) waits for the next one.
      const none = { baseLayers: 0, blobNotes: 0 };
      const collected = doomed.length || stageTags.length ? await this.o.collectUnused().catch((err: unknown) => (this.o.logger.warn({ err }, "cannot collect unused base layers and blob notes"), none)) : none;
      if (collected.baseLayers > 0 || collected.blobNotes > 0) this.o.logger.info(collected, "removed base layers no image uses, and notes of layers storage no longer has");
      if (doomed.length) {
        this.o.logger.info({ project: project ?? "*", removed: doomed.map((i) => `${i.project}:${i.commit.slice(0, 12)}`), bytesFreed }, "pruned superseded images");
        this.o.onPrune(doomed.length, bytesFreed);
      }
      const reset = await this.resetIfFull("after prune", after);
      return { images: doomed, bytesFreed, reset };
    });
  }

  /**
   * After a fast-path build: it added no image to podman's storage, so the keep policy drops
   * nothing new, and a podman listing is not run (the project's next build waits for this). The
   * volume is still checked: the fast path's snapshots and the logs grow it.
   */
  afterFastBuild(): Promise<boolean> {
    return this.serial(() => this.resetIfFull("after a fast build"));
  }

  /**
   * Before a build (which holds a slot itself): reset if the volume is over the threshold. The
   * build waits here for a prune that is running: buildah's cache look-up loses a race with an
   * image removal ("getting top layer info: layer not known", seen in session 11 when this check
   * skipped the queue).
   */
  beforeBuild(): Promise<boolean> {
    return this.serial(async () => {
      const reset = await this.resetIfFull("before build", undefined, 1);
      await this.spreadDirectories();
      return reset;
    });
  }

  /**
   * Once for a volume and again after each reset, before the build that follows (see
   * spread-dirs.ts). The flag stays on the directories, so a note on the volume says it is done:
   * a woken kilnd's first build does not start chattr again.
   */
  private async spreadDirectories(): Promise<void> {
    if (this.spread) return;
    this.spread = true;
    if (await stat(this.spreadNote).then(() => true, () => false)) return;
    const refused = await spreadDirectories(this.o.spreadDirs, this.o.env());
    if (refused) this.o.logger.info({ dirs: this.o.spreadDirs, refused }, "the volume takes no top-directory hint (not ext4?): new trees go where the filesystem puts them");
    await writeFile(this.spreadNote, refused ? `refused: ${refused}\n` : "marked\n").catch(() => {});
  }

  private get spreadNote(): string {
    return join(this.o.dataDir, SPREAD_NOTE);
  }

  /** A build ran out of space: reset if no other build needs the storage. */
  onNoSpace(): Promise<boolean> {
    return this.serial(async () => {
      if (this.o.runningBuilds() > 1) return false;
      await this.doReset("a build ran out of space");
      return true;
    });
  }

  /** The ResetStorage RPC: only while no build runs. */
  resetNow(reason: string): Promise<{ bytesFreed: number; durationMs: number } | undefined> {
    return this.serial(async () => (this.o.runningBuilds() > 0 ? undefined : this.doReset(reason)));
  }

  private async resetIfFull(when: string, usage?: VolumeUsage, own = 0): Promise<boolean> {
    const u = usage ?? (await this.usage());
    if (u.usedPercent <= this.o.resetThresholdPercent) return false;
    if (this.o.runningBuilds() > own) {
      this.o.logger.warn({ usedPercent: u.usedPercent, when }, "volume over the reset threshold, but other builds are running: reset deferred");
      return false;
    }
    await this.doReset(`volume ${u.usedPercent.toFixed(1)}% used (threshold ${this.o.resetThresholdPercent}%) ${when}`);
    return true;
  }

  private async doReset(reason: string): Promise<{ bytesFreed: number; durationMs: number }> {
    const t0 = Date.now();
    const before = await this.usage();
    this.o.logger.warn({ reason }, "resetting container storage");
    await this.o.releaseMounts().catch(() => {});
    await resetStorage(this.o.layout, this.o.env(), this.o.tmpRoot, this.o.liveTmpDirs(), this.o.snapshotsDir);
    // The reset made the marked directories anew.
    this.spread = false;
    await rm(this.spreadNote, { force: true });
    const after = await this.usage();
    const durationMs = Date.now() - t0;
    const bytesFreed = Math.max(0, after.freeBytes - before.freeBytes);
    this.o.logger.warn({ reason, durationMs, bytesFreed, usedPercent: after.usedPercent }, "container storage reset; the next build is a cold one");
    this.o.onReset(durationMs, bytesFreed);
    return { bytesFreed, durationMs };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }
}

// What the fast path starts from: the last full build of a project, as pushed, with what every
// step reads from the context and, when kiln can make it, what its final COPY needs (the plan,
// the directories on the way to the destination, the owner). One file per project under
// <data>/fastpath, written after each successful build; beside them, under
// snapshots/<project>/<build>/, the upper directories of steps kiln ran itself that a later start
// stands on (a base's parents name them), removed once no base names them.
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { TarEntry } from "../image/tar-entries.js";
import type { OciManifest } from "../registry/client.js";
import { writeFileAtomic } from "../util/fs-atomic.js";
import type { CopyPlan, ReadsPlan } from "./plan.js";
import type { ParentImage } from "./run-steps.js";

// 2: earlier COPY sources unquoted (words.ts), checked by what they resolve to (reach.ts).
// 3: the FROM images' digests.
// 4: every step's reads (a build that changes none of them reuses every layer); the final COPY's part optional.
// 5: RUN steps after the final COPY, and the image below it.
// 6: cache-mount RUN steps and context COPYs after the COPY kiln starts from; earlier COPYs to start from (starts).
// 7: a parent may stand on snapshots of kiln's own steps (ParentImage.layers).
// 8: RUN steps carry the ARG values they see (a base from before ran them without).
// 9: kiln's label step may come before the final stage's trailing metadata steps (podman/labels.ts).
// 10: kiln's labels are the commit's (podman/kiln-labels.ts): a base from before carries a
//     kiln.build label that the new labels would not replace.
const VERSION = 10;

/** An OCI image config, kept as the registry has it; only the fields kiln edits are typed. */
export interface ImageConfig {
  created?: string;
  config?: { Labels?: Record<string, string>; WorkingDir?: string; [k: string]: unknown };
  rootfs: { type: string; diff_ids: string[] };
  history?: { created?: string; created_by?: string; comment?: string; empty_layer?: boolean }[];
  [k: string]: unknown;
}

/** Where a COPY kiln makes writes, as the last full build's layer of it shows. */
export interface CopyTarget {
  /** The COPY's destination, absolute; a trailing "/" when written with one. */
  dest: string;
  ancestors: TarEntry[];
  /**
   * A final COPY of one file to a destination without a trailing "/", whose source was a file in
   * the last full build: "file" when the layer wrote it as the destination itself, "into-dir" when
   * the destination was a directory of the image below (buildah copied the file into it).
   */
  fileDest?: "file" | "into-dir";
  owner: { uid: number; gid: number };
}

/**
 * What the fast path needs to start from a COPY of the final stage (a build whose change reaches
 * no step before it): the COPY's layer, the later COPYs' (copies, in order) and, with RUN steps
 * after it, the image below the COPY.
 */
export interface CopyBase extends CopyTarget {
  plan: CopyPlan;
  /** The context COPYs among plan.after, in order. */
  copies: CopyTarget[];
  /** With RUN steps after the COPY (plan.after): the image below the COPY, in podman's storage. */
  parent?: ParentImage;
  /**
   * The final COPY is a COPY --from an earlier stage S that kiln rebuilds (plan.ts, planStageCopy):
   * S's plan, the image below S's final COPY, and how the COPY --from's layer wrote a file source.
   * plan.sources are then paths in S.
   */
  from?: { plan: CopyPlan; parent: ParentImage; stage: number };
}

export interface FastPathBase {
  version: number;
  /** The request fields a fast build must share with the full build (see baseKey). */
  key: string;
  commit: string;
  containerfileDigest: string;
  ignoreDigest: string;
  /** What every step reads from the context: a change to none of it reuses every layer. */
  reads: ReadsPlan;
  /** The final COPY's layer can be made by kiln; otherwise why not (a change it reads takes the full build). */
  copy: CopyBase | { refused: string };
  /**
   * Earlier COPYs of the final stage kiln can start from, the latest first: a change an earlier
   * step reads (package.json) reruns everything from the first COPY that reads it.
   */
  starts: CopyBase[];
  manifest: OciManifest;
  config: ImageConfig;
  /** The FROM images' digests the last full build was built on. */
  baseImages: { reference: string; digest: string }[];
}

export interface BaseKeyInput {
  repository: string;
  containerfile: string;
  context: string;
  target: string;
  buildArgs: Record<string, string>;
  /** Each build secret's id and the digest of its value (never the value): a changed secret must rerun its RUN steps. */
  secrets: [string, string][];
  engine: string;
}

/** What a base was built from, as a digest: the file on the volume holds no build-arg value. */
export const baseKey = (k: BaseKeyInput) =>
  createHash("sha256")
    .update(JSON.stringify([k.repository, k.containerfile, k.context, k.target, Object.entries(k.buildArgs).sort(([a], [b]) => (a < b ? -1 : 1)), k.secrets, k.engine]))
    .digest("hex");

export function createBaseStore(dir: string) {
  const fileOf = (project: string) => join(dir, `${project}.json`);
  const snapshotsDir = join(dir, "snapshots");
  const snapshotsOf = (project: string) => join(snapshotsDir, project);
  /** A project's sweep under way: a build's snapshots are kept only once it is done. */
  const sweeping = new Map<string, Promise<void>>();
  /** The snapshot directories of a project no parent of its base (if any) names go, in the background. */
  const sweep = (project: string, base?: Pick<FastPathBase, "copy" | "starts">) => {
    const named = base ? snapshotDirs(base) : [];
    const root = snapshotsOf(project);
    const swept = (sweeping.get(project) ?? Promise.resolve())
      .then(() => readdir(root))
      .then((builds) => Promise.all(builds.map((b) => join(root, b)).filter((d) => !named.some((n) => n.startsWith(`${d}/`))).map((d) => rm(d, { recursive: true, force: true }))))
      .then(
        () => {},
        () => {},
      );
    sweeping.set(project, swept);
    void swept.then(() => sweeping.get(project) === swept && sweeping.delete(project));
  };
  async function load(project: string): Promise<FastPathBase | undefined> {
    try {
      const b = JSON.parse(await readFile(fileOf(project), "utf8")) as FastPathBase & { refused?: string };
      return b.version === VERSION && b.refused === undefined ? b : undefined;
    } catch {
      return undefined;
    }
  }
  return {
    /** Where the snapshots of kiln's own steps live (a storage reset removes it: they stand on its images). */
    snapshotsDir,
    load,
    async save(project: string, base: Omit<FastPathBase, "version">): Promise<void> {
      await mkdir(dir, { recursive: true });
      await writeFileAtomic(fileOf(project), JSON.stringify({ version: VERSION, ...base }));
      sweep(project, base);
    },
    /** Forgets the project's base; with a reason, remembers why the last full build could not be one. */
    async remove(project: string, reason?: string): Promise<void> {
      if (reason === undefined) {
        await rm(fileOf(project), { force: true });
      } else {
        await mkdir(dir, { recursive: true });
        await writeFileAtomic(fileOf(project), JSON.stringify({ version: VERSION, refused: reason }));
      }
      sweep(project);
    },
    /** The images in podman's storage the bases (the project's, or every one) stand on, by ID without "sha256:". */
    async parentImages(project?: string): Promise<Set<string>> {
      const projects = project ? [project] : (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5));
      const bases = await Promise.all(projects.map(load));
      return new Set(bases.flatMap((b) => (b ? parentsOf(b).map((p) => p.id.replace(/^sha256:/, "")) : [])));
    },
    /** Why the project has no base, when its last full build was refused as one. */
    async refusal(project: string): Promise<string | undefined> {
      try {
        const b = JSON.parse(await readFile(fileOf(project), "utf8")) as { refused?: string };
        return typeof b.refused === "string" ? b.refused : undefined;
      } catch {
        return undefined;
      }
    },
    /**
     * Keeps a build's upper directories (moved, on the same volume) as snapshots a later start can
     * stand on; returns their new paths, in order. Until a saved base names them they are swept
     * with the next save.
     */
    async keepSnapshots(project: string, buildId: string, uppers: readonly string[]): Promise<string[]> {
      await sweeping.get(project);
      const into = join(snapshotsOf(project), buildId);
      await mkdir(into, { recursive: true });
      return Promise.all(
        uppers.map(async (u, n) => {
          const to = join(into, String(n));
          await rename(u, to);
          return to;
        }),
      );
    },
  };
}

/** The images (and snapshots) the base's starts stand on: each start's parent, and a rebuilt stage's. */
function parentsOf(base: Pick<FastPathBase, "copy" | "starts">): ParentImage[] {
  const bases = [..."refused" in base.copy ? [] : [base.copy], ...base.starts];
  return bases.flatMap((c) => [c.parent, c.from?.parent].filter((p): p is ParentImage => p !== undefined));
}

/** Every snapshot directory the base's parents stand on. */
function snapshotDirs(base: Pick<FastPathBase, "copy" | "starts">): string[] {
  return parentsOf(base).flatMap((p) => p.layers ?? []);
}

export type BaseStore = ReturnType<typeof createBaseStore>;

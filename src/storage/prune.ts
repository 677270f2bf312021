// Label-based pruning: of the images kiln built for a project (labels kiln.managed and
// kiln.project), keep the N built most recently for a fast rollback and remove the rest. Base images carry
// no kiln label and are never touched; the layer cache a kept image uses stays, because its
// layers are the kept image's own parents; cache mounts are not images at all.
import { cli, imageUnknown, type PodmanImage } from "../podman/cli.js";
import { readKilnLabels } from "../podman/kiln-labels.js";
import { parseStageTag } from "../podman/stage-images.js";
import { errorSummary } from "../process/exec.js";

export interface KilnImage {
  id: string;
  project: string;
  /** The commit it was built from (its revision label). */
  commit: string;
  /** The newest build that gave this image, while kilnd keeps its record. */
  build?: ImageBuild;
  names: string[];
  sizeBytes: number;
  created: number; // seconds since the epoch
}

/** A build that gave an image: its id, and when it ended (ms since the epoch). */
export interface ImageBuild {
  id: string;
  ms: number;
}

export type { PodmanImage };

/** What container storage holds, in one podman call: kiln's builds and its stage tags among it. */
export const listImages = (env: Record<string, string>): Promise<PodmanImage[]> => cli.images(env);

/**
 * The final images of kiln's builds, built most recently first. A commit built again gives the
 * image it gave before (its `created` is the first build's), so the order is the newest build's
 * that gave each image (builds: by full image ID, from kilnd's records), the image's own time
 * when no record is left.
 */
export function kilnImagesOf(rows: readonly PodmanImage[], project?: string, builds?: ReadonlyMap<string, ImageBuild>): KilnImage[] {
  const when = (i: KilnImage) => i.build?.ms ?? i.created * 1000;
  return rows
    .map((i) => ({ i, kiln: readKilnLabels(i.Labels) }))
    .filter(({ kiln }) => kiln !== undefined && (!project || kiln.project === project))
    .map(({ i, kiln }) => {
      const build = builds?.get(i.Id.startsWith("sha256:") ? i.Id : `sha256:${i.Id}`);
      return { id: i.Id, project: kiln!.project, commit: kiln!.commit, ...(build ? { build } : {}), names: i.Names ?? [], sizeBytes: i.Size, created: i.Created };
    })
    .sort((a, b) => when(b) - when(a) || (a.id < b.id ? 1 : -1));
}

/** The tags kiln gave the earlier stages' images of its builds (podman/stage-images.ts). */
export function stageTagsOf(rows: readonly PodmanImage[]): { name: string; project: string; commit: string; id: string }[] {
  return rows.flatMap((i) =>
    (i.Names ?? []).flatMap((name) => {
      const t = parseStageTag(name);
      return t ? [{ name, ...t, id: i.Id.replace(/^sha256:/, "") }] : [];
    }),
  );
}

/**
 * What the keep policy removes: per project, every image but the newest `keep` tagged ones.
 * Untagged ones (a commit built again moves its tag to the new image) always go.
 */
export function selectForPrune(images: readonly KilnImage[], keep: number): KilnImage[] {
  const kept = new Map<string, number>();
  const out: KilnImage[] = [];
  for (const img of images) {
    const n = kept.get(img.project) ?? 0;
    if (img.names.length > 0 && n < keep) kept.set(img.project, n + 1);
    else out.push(img);
  }
  return out;
}

/** Removes the images and the intermediate layers only they used; returns what could not go. */
/**
 * Removes images (by ID) and takes names off theirs (tags whose image later builds' steps may
 * stand on: the image stays while any does), then the images nothing refers to any more.
 */
export async function removeImages(env: Record<string, string>, ids: readonly string[], names: readonly string[] = []): Promise<string[]> {
  const failed: string[] = [];
  for (const id of ids) {
    const r = await cli.rmi(env, id);
    if (r.exitCode !== 0 && !imageUnknown(r)) failed.push(`${id.slice(0, 12)}: ${errorSummary(r)}`);
  }
  for (const name of names) {
    const r = await cli.untag(env, name);
    if (r.exitCode !== 0 && !imageUnknown(r)) failed.push(`${name}: ${errorSummary(r)}`);
  }
  // Layers nothing refers to any more: intermediates of cancelled builds, untagged stages nothing stands on.
  await cli.imagePrune(env);
  return failed;
}

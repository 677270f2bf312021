// Label-based pruning: of the images kiln built for a project (labels kiln.managed and
// kiln.project), keep the newest N for a fast rollback and remove the rest. Base images carry
// no kiln label and are never touched; the layer cache a kept image uses stays, because its
// layers are the kept image's own parents; cache mounts are not images at all.
import { loadExeca } from "../process/execa.js";
import { parseStageTag } from "../podman/stage-images.js";

export interface KilnImage {
  id: string;
  project: string;
  buildId: string;
  names: string[];
  sizeBytes: number;
  created: number; // seconds since the epoch
}

export interface PodmanImage {
  Id: string;
  Names?: string[] | null;
  Size: number;
  Created: number;
  Labels?: Record<string, string> | null;
}

/** What container storage holds, in one podman call: kiln's builds and its stage tags among it. */
export async function listImages(env: Record<string, string>): Promise<PodmanImage[]> {
  const execa = await loadExeca();
  const r = await execa("podman", ["images", "--format", "json"], { env, extendEnv: false, timeout: 60_000 });
  return (JSON.parse(r.stdout || "[]") as PodmanImage[] | null) ?? [];
}

/** The final images of kiln's builds (not the label steps' intermediates), newest first. */
export function kilnImagesOf(rows: readonly PodmanImage[], project?: string): KilnImage[] {
  return rows
    .filter((i) => i.Labels?.["kiln.managed"] === "true" && i.Labels["kiln.build"] && i.Labels["org.opencontainers.image.created"])
    .filter((i) => !project || i.Labels?.["kiln.project"] === project)
    .map((i) => ({
      id: i.Id,
      project: i.Labels!["kiln.project"] ?? "",
      buildId: i.Labels!["kiln.build"]!,
      names: i.Names ?? [],
      sizeBytes: i.Size,
      created: i.Created,
    }))
    .sort((a, b) => b.created - a.created || (a.buildId < b.buildId ? 1 : -1));
}

/** The tags kiln gave the earlier stages' images of its builds (podman/stage-images.ts). */
export function stageTagsOf(rows: readonly PodmanImage[]): { name: string; project: string; buildId: string }[] {
  return rows.flatMap((i) =>
    (i.Names ?? []).flatMap((name) => {
      const t = parseStageTag(name);
      return t ? [{ name, ...t }] : [];
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
export async function removeImages(env: Record<string, string>, ids: readonly string[]): Promise<string[]> {
  const execa = await loadExeca();
  const failed: string[] = [];
  for (const id of ids) {
    const r = await execa("podman", ["rmi", "--", id], { env, extendEnv: false, reject: false, timeout: 120_000 });
    if (r.exitCode !== 0 && !/image not known|no such image/i.test(r.stderr)) failed.push(`${id.slice(0, 12)}: ${r.stderr.trim().split("\n").at(-1)}`);
  }
  // Layers nothing refers to any more: intermediates of cancelled builds and the like.
  await execa("podman", ["image", "prune", "--force"], { env, extendEnv: false, reject: false, timeout: 120_000 });
  return failed;
}

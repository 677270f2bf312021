// The labels kiln puts on every image it builds, and how the prune reads them back: one schema,
// written by the pipeline, read by storage/prune.ts. Every value is the commit's or the
// project's, none the build's: a commit built again takes kiln's label step from the layer cache
// like any other step, and gives the same image (as BuildKit does). Which builds produced an
// image is in kilnd's records (the record's image ID), not in the image.
export const LABEL = {
  managed: "kiln.managed",
  project: "kiln.project",
  source: "org.opencontainers.image.source",
  revision: "org.opencontainers.image.revision",
  /** The commit's committer time (as SOURCE_DATE_EPOCH would give it), not the build's. */
  created: "org.opencontainers.image.created",
} as const;

/** kiln's label step in an image's history (buildah's created_by): LABEL.managed is its first label (kilnLabels). */
export const KILN_LABEL_STEP = new RegExp(`#\\(nop\\) LABEL "${LABEL.managed.replaceAll(".", "\\.")}"="true"`);

export interface KilnLabelInput {
  project: string;
  /** The git URL, credentials taken out. */
  source: string;
  commit: string;
  /** The commit's committer time. */
  committed: Date;
}

export function kilnLabels(i: KilnLabelInput): Record<string, string> {
  return {
    [LABEL.managed]: "true",
    [LABEL.project]: i.project,
    [LABEL.source]: i.source,
    [LABEL.revision]: i.commit,
    [LABEL.created]: i.committed.toISOString(),
  };
}

/**
 * An image's labels as kiln's: its project and commit, when it is the final image of a kiln
 * build. `created` is the last label: with the --label fallback each label is a step of its own,
 * and the images between them are not kiln's images.
 */
export function readKilnLabels(labels: Record<string, string> | null | undefined): { project: string; commit: string } | undefined {
  if (labels?.[LABEL.managed] !== "true" || !labels[LABEL.project] || !labels[LABEL.revision] || !labels[LABEL.created]) return undefined;
  return { project: labels[LABEL.project], commit: labels[LABEL.revision] };
}

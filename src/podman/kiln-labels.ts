// The labels kiln puts on every image it builds, and how the prune reads them back: one schema,
// written by the pipeline, read by storage/prune.ts. Stable labels first, so that their build
// step can come from the cache; the build's own (its id, its time) last.
export const LABEL = {
  managed: "kiln.managed",
  project: "kiln.project",
  build: "kiln.build",
  source: "org.opencontainers.image.source",
  revision: "org.opencontainers.image.revision",
  created: "org.opencontainers.image.created",
} as const;

/** kiln's label step in an image's history (buildah's created_by): LABEL.managed is its first label (kilnLabels). */
export const KILN_LABEL_STEP = new RegExp(`#\\(nop\\) LABEL "${LABEL.managed.replaceAll(".", "\\.")}"="true"`);

export interface KilnLabelInput {
  project: string;
  /** The git URL, credentials taken out. */
  source: string;
  commit: string;
  buildId: string;
  created: Date;
}

export function kilnLabels(i: KilnLabelInput): Record<string, string> {
  return {
    [LABEL.managed]: "true",
    [LABEL.project]: i.project,
    [LABEL.source]: i.source,
    [LABEL.revision]: i.commit,
    [LABEL.build]: i.buildId,
    [LABEL.created]: i.created.toISOString(),
  };
}

/** An image's labels as kiln's: its project and build, when it is the final image of a kiln build. */
export function readKilnLabels(labels: Record<string, string> | null | undefined): { project: string; buildId: string } | undefined {
  if (labels?.[LABEL.managed] !== "true" || !labels[LABEL.build] || !labels[LABEL.created]) return undefined;
  return { project: labels[LABEL.project] ?? "", buildId: labels[LABEL.build] };
}

// The images a multi-stage build leaves for its earlier stages, read from buildah's output
// ("[1/3] STEP 4/4: RUN …", then "--> Using cache <id>" or "--> <id>"): the last image of each
// stage but the final one. Nothing refers to them once the build is done (the final image is
// built FROM another base), so a prune would take them and the next build would run those
// stages again. kiln tags them as the build's own (localhost/kiln-stage/<project>:<build>-<n>),
// and the prune removes the tags together with the build they belong to.
export const STAGE_REPO = "localhost/kiln-stage";

const STAGE_STEP = /^\[(\d+)\/(\d+)\] STEP \d+\/\d+: /;
const IMAGE = /^--> (?:Using cache )?([0-9a-f]{12,64})$/;

export function createStageTracker() {
  let stage = 0;
  let stages = 0;
  const last = new Map<number, string>();
  return {
    line(text: string): void {
      const s = STAGE_STEP.exec(text);
      if (s) {
        stage = Number(s[1]);
        stages = Number(s[2]);
        return;
      }
      const m = stage > 0 ? IMAGE.exec(text) : null;
      if (m) last.set(stage, m[1]!);
    },
    /** The last image of every stage before the final one, by stage number. */
    earlierStages(): { stage: number; image: string }[] {
      return [...last].filter(([n]) => n < stages).map(([n, image]) => ({ stage: n, image }));
    },
  };
}

export const stageTag = (project: string, buildId: string, stage: number) => `${STAGE_REPO}/${project}:${buildId}-${stage}`;

/** "localhost/kiln-stage/<project>:<build>-<n>" -> its project and build, or undefined. */
export function parseStageTag(name: string): { project: string; buildId: string } | undefined {
  const m = /^localhost\/kiln-stage\/([a-z0-9][a-z0-9._-]*):([a-z0-9-]+)-(\d+)$/.exec(name);
  return m ? { project: m[1]!, buildId: m[2]! } : undefined;
}

// The images a multi-stage build leaves for its earlier stages, read from buildah's output
// ("[1/3] STEP 4/4: RUN …", then "--> Using cache <id>" or "--> <id>"): the last image of each
// stage but the final one. Nothing refers to them once the build is done (the final image is
// built FROM another base), so a prune would take them and the next build would run those
// stages again. kiln tags them with the final image's commit
// (localhost/kiln-stage/<project>:<commit>-<n>), and the prune removes the tags together with
// the image of that commit. A commit built again moves its tags, as it moves the image's.
export const STAGE_REPO = "localhost/kiln-stage";
/**
 * Where a first build's skeleton is tagged while it runs (fastpath/first-build.ts): removed after
 * the build, and at start after a killed kilnd (builds/stop.ts).
 */
export const SKELETON_REPO = "localhost/kiln-first-build";

// A single-stage build's lines have no "[n/m] " prefix.
const STAGE_STEP = /^(?:\[(\d+)\/(\d+)\] )?STEP (\d+)\/\d+: (\S+)/;
const IMAGE = /^--> (?:Using cache )?([0-9a-f]{11,64})$/;

/**
 * buildah runs stages side by side and interleaves their output: a final stage's
 * `COPY --from=build` prints its STEP line, then waits while the build stage's steps print
 * theirs, then prints its own image after the build stage's last one. So an image line belongs
 * to the newest step still waiting for its image (a stack), not to the last STEP line seen; FROM
 * prints none, and a short ID that follows a step's full one is the same image again.
 */
export function createStageTracker() {
  let stages = 1;
  const waiting: { stage: number; step: number }[] = [];
  const last = new Map<number, string>();
  const steps = new Map<string, string>();
  let previous = "";
  return {
    line(text: string): void {
      const s = STAGE_STEP.exec(text);
      if (s) {
        stages = Number(s[2] ?? 1);
        if (s[4]!.toUpperCase() !== "FROM") waiting.push({ stage: Number(s[1] ?? 1), step: Number(s[3]) });
        return;
      }
      const m = IMAGE.exec(text);
      if (!m) return;
      const id = m[1]!;
      if (previous.startsWith(id)) return;
      previous = id;
      const w = waiting.pop();
      if (w === undefined) return;
      last.set(w.stage, id);
      steps.set(`${w.stage}:${w.step}`, id);
    },
    /** The last image of every stage before the final one, by stage number. */
    earlierStages(): { stage: number; image: string }[] {
      return [...last].filter(([n]) => n < stages).map(([n, image]) => ({ stage: n, image }));
    },
    /** The image a step of the final stage left (step: buildah's number, FROM is 1), as printed (maybe short). */
    finalStageStep(step: number): string | undefined {
      return steps.get(`${stages}:${step}`);
    },
    /** The same for any stage (1-based, as buildah's "[n/m]"). */
    stageStep(stage: number, step: number): string | undefined {
      return steps.get(`${stage}:${step}`);
    },
  };
}

export const stageTag = (project: string, commit: string, stage: number) => `${STAGE_REPO}/${project}:${commit}-${stage}`;

/**
 * "localhost/kiln-stage/<project>:<commit>-<n>" -> its project and commit, or undefined. (A tag
 * of an older kilnd names a build instead: it matches no kept image's commit and goes.)
 */
export function parseStageTag(name: string): { project: string; commit: string } | undefined {
  const m = /^localhost\/kiln-stage\/([a-z0-9][a-z0-9._-]*):([a-z0-9-]+)-(\d+)$/.exec(name);
  return m ? { project: m[1]!, commit: m[2]! } : undefined;
}

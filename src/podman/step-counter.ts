// Counts a build's Containerfile steps and how many came from the layer cache, from podman's
// output ("STEP 3/6: COPY …", "--> Using cache …"). FROM lines and the LABEL steps that carry
// kiln's own labels are not the user's steps and are not counted.
export interface StepCounts {
  total: number;
  cached: number;
}

// Multi-stage builds prefix the stage: "[1/2] STEP 3/7: RUN …".
const STEP = /^(?:\[\d+\/\d+\] )?STEP \d+\/\d+: (\S+)(.*)$/;

const LABEL_KEY = /^\s*"?([^"=\s]+)"?=/;

export function createStepCounter(kilnLabelKeys: ReadonlySet<string>) {
  let total = 0;
  let cached = 0;
  let counting = false;
  return {
    line(text: string): void {
      const m = STEP.exec(text);
      if (m) {
        const instr = m[1]!.toUpperCase();
        const synthetic = instr === "LABEL" && kilnLabelKeys.has(LABEL_KEY.exec(m[2]!)?.[1] ?? "");
        counting = instr !== "FROM" && !synthetic;
        if (counting) total++;
        return;
      }
      if (counting && text.startsWith("--> Using cache ")) {
        cached++;
        counting = false;
      }
    },
    get counts(): StepCounts {
      return { total, cached };
    },
  };
}

// A step of the final stage that made a layer: its STEP line (COPY, ADD or RUN; no stage prefix,
// or the last stage's), no "Using cache" after it, then buildah's line with the image it committed.
const LAYER_STEP = /^(?:\[(\d+)\/(\d+)\] )?STEP \d+\/\d+: (?:COPY|ADD|RUN)\b/i;
const COMMITTED = /^--> ([0-9a-f]{11,64})$/;

/** Reads buildah's output and calls committed with the image of each final-stage step that made a layer. */
export function createLayerStepWatch(committed: (imageIdPrefix: string) => void): { line(line: string): void } {
  let pending = false;
  return {
    line(line) {
      if (STEP.test(line)) {
        const m = LAYER_STEP.exec(line);
        pending = m !== null && m[1] === m[2];
      } else if (line.startsWith("--> Using cache ")) {
        pending = false;
      } else if (pending) {
        const c = COMMITTED.exec(line);
        if (c) {
          pending = false;
          committed(c[1]!);
        }
      }
    },
  };
}

// The earlier stages' images, read from buildah's interleaved output: a stage that waits on
// another (COPY --from) prints its image after the other stage's steps; cached steps print their
// full ID and then the short one; steps that ran print the short one.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createStageTracker } from "../../src/podman/stage-images.js";

const A = "a".repeat(64), B = "b".repeat(64), C = "c".repeat(64), D = "d".repeat(64), E = "e".repeat(64);
const track = (lines: string[]) => {
  const t = createStageTracker();
  for (const l of lines) t.line(l);
  return t.earlierStages();
};

describe("the earlier stages' images", () => {
  test("a build stage run while the final stage waits on its COPY --from: its last image is its own, not the waiting step's", () => {
    const stages = track([
      "[1/3] STEP 1/2: FROM base AS deps",
      "[1/3] STEP 2/2: RUN npm ci",
      `--> Using cache ${A}`,
      `--> ${A.slice(0, 11)}`,
      "[3/3] STEP 1/3: FROM base",
      "[3/3] STEP 2/3: COPY --from=build /app/dist ./dist",
      `[2/3] STEP 1/2: FROM ${A} AS build`,
      "[2/3] STEP 2/2: RUN npx tsc -p .",
      "src/server.ts(1,1): some compiler output",
      `--> ${B.slice(0, 11)}`, // the build stage's RUN ran: only the short ID
      `--> ${C.slice(0, 11)}`, // then the final stage's COPY --from
      "[3/3] STEP 3/3: CMD [\"node\"]",
      "[3/3] COMMIT app:1",
      `--> ${D.slice(0, 11)}`,
      "Successfully tagged app:1",
      D,
    ]);
    assert.deepEqual(stages, [
      { stage: 1, image: A },
      { stage: 2, image: B.slice(0, 11) },
    ]);
  });

  test("cached steps: the full ID, and the short one after it is the same image", () => {
    const stages = track([
      "[1/2] STEP 1/2: FROM base AS a",
      "[1/2] STEP 2/2: COPY x /x",
      `--> Using cache ${E}`,
      `--> ${E.slice(0, 11)}`,
      "[2/2] STEP 1/2: FROM scratch",
      "[2/2] STEP 2/2: COPY --from=a /x /y",
      `--> Using cache ${C}`,
      `--> ${C.slice(0, 11)}`,
      "[2/2] COMMIT app:1",
      `--> ${C.slice(0, 11)}`,
      C,
    ]);
    assert.deepEqual(stages, [{ stage: 1, image: E }]);
  });

  test("one stage: nothing earlier", () => {
    assert.deepEqual(track(["STEP 1/2: FROM base", "STEP 2/2: COPY . .", `--> ${A.slice(0, 11)}`, A]), []);
  });

  test("the final stage's step images, by buildah's step number (one stage and several)", () => {
    const one = createStageTracker();
    for (const l of ["STEP 1/4: FROM base", "STEP 2/4: COPY a ./", `--> Using cache ${A}`, `--> ${A.slice(0, 11)}`, "STEP 3/4: COPY src/ ./src/", `--> ${B.slice(0, 11)}`, "STEP 4/4: RUN make", "COMMIT app:1", `--> ${C.slice(0, 11)}`, C]) one.line(l);
    assert.equal(one.finalStageStep(2), A);
    assert.equal(one.finalStageStep(3), B.slice(0, 11));
    assert.equal(one.finalStageStep(4), C.slice(0, 11));
    assert.equal(one.finalStageStep(1), undefined);
    const two = createStageTracker();
    for (const l of ["[1/2] STEP 1/2: FROM base AS a", "[1/2] STEP 2/2: RUN x", `--> ${D.slice(0, 11)}`, "[2/2] STEP 1/3: FROM base", "[2/2] STEP 2/3: COPY b ./", `--> ${E.slice(0, 11)}`, "[2/2] STEP 3/3: RUN y", `--> ${A.slice(0, 11)}`]) two.line(l);
    assert.equal(two.finalStageStep(2), E.slice(0, 11));
    assert.equal(two.finalStageStep(3), A.slice(0, 11));
  });
});

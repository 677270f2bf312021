// CompareCommits outside any build: git runs quietly (its output only in an error, credentials
// masked), in the environment a build's git gets, stopped when the caller goes away.
import { createMasker } from "../secrets/masker.js";
import { run } from "../process/run.js";
import type { CompareSpec } from "../validate/build-request.js";
import type { CommitRelation, GitCache, GitExec } from "./cache.js";
import { gitEnv } from "./env.js";

const STOP_GRACE_MS = 2000;

export function createCommitComparer(cache: GitCache, baseEnv: () => Record<string, string>) {
  return async function compare(spec: CompareSpec, signal: AbortSignal): Promise<CommitRelation> {
    const masker = createMasker(spec.git.secrets);
    const env = gitEnv(baseEnv(), spec.git);
    const git: GitExec = async (args) => {
      signal.throwIfAborted();
      const p = await run("git", args, { env, redact: (text, cut) => (cut ? masker.maskCut(text) : masker.mask(text)) });
      const stop = () => void p.stop(STOP_GRACE_MS);
      signal.addEventListener("abort", stop, { once: true });
      try {
        return await p.result;
      } finally {
        signal.removeEventListener("abort", stop);
      }
    };
    return cache.compare(spec.project, spec.git, spec.base, spec.head, git);
  };
}

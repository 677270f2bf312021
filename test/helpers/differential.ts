// One commit built twice, by a kilnd with the fast path and by one without it (a full podman
// build), and the two pushed images compared: filesystems (type, mode, owner, link, content),
// configs and history. The referee of the fast path, for the example tests and the generator.
import type { Build } from "../../src/gen/kiln/v1/builder_pb.js";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import type { TestRepo } from "./git-repo.js";
import { comparableConfig, fsDifferences, viewImage } from "./image-fs.js";
import type { TestKilnd } from "./kilnd.js";
import type { TestRegistry } from "./registry.js";

export interface SideBySide {
  f: Build;
  g: Build;
  /** What differs between the two images (empty when equal, or when either build failed). */
  differences: string[];
}

export interface BuildOptions {
  context?: string;
  buildArgs?: Record<string, string>;
  secrets?: Record<string, string>;
}

export function createDifferential(fast: TestKilnd, full: TestKilnd, reg: TestRegistry) {
  const build = (k: TestKilnd, repo: TestRepo, project: string, image: string, commit: string, o: BuildOptions): Promise<Build> =>
    k.buildCommit({ project, url: repo.url, commit, image: `${reg.host}/${image}`, ...(o.context ? { context: o.context } : {}), ...(o.buildArgs ? { buildArgs: o.buildArgs } : {}), ...(o.secrets ? { secrets: o.secrets } : {}) });

  /** Builds the commit on both kilnds; when both succeed, compares their images. */
  return async function buildBoth(repo: TestRepo, project: string, commit: string, o: BuildOptions = {}): Promise<SideBySide> {
    const [f, g] = await Promise.all([build(fast, repo, project, `fast/${project}`, commit, o), build(full, repo, project, `full/${project}`, commit, o)]);
    const differences: string[] = [];
    if (g.fastPath) differences.push("the full side took the fast path");
    if (f.state !== g.state) differences.push(`states: fast ${BuildState[f.state]} (${f.error}) / full ${BuildState[g.state]} (${g.error})`);
    if (f.state !== BuildState.SUCCEEDED || g.state !== BuildState.SUCCEEDED) return { f, g, differences };
    if (f.imageDigest !== (await reg.digest(`fast/${project}`, commit))) differences.push("the digest reported is not the registry's");
    const [a, b] = await Promise.all([viewImage(reg.host, `fast/${project}`, commit), viewImage(reg.host, `full/${project}`, commit)]);
    differences.push(...fsDifferences(a.files, b.files).map((d) => `filesystem: ${d}`));
    const [ca, cb] = [JSON.stringify(comparableConfig(a.config)), JSON.stringify(comparableConfig(b.config))];
    if (ca !== cb) differences.push(`config: ${ca} vs ${cb}`);
    if (a.config.config?.Labels?.["org.opencontainers.image.revision"] !== commit) differences.push("the revision label is not the commit");
    if (a.config.config?.Labels?.["org.opencontainers.image.created"] !== repo.committed(commit)) differences.push("the created label is not the commit's time");
    if (f.imageId !== a.configDigest) differences.push("the image id is not the config's digest");
    if (f.stepsTotal !== g.stepsTotal) differences.push(`steps: ${f.stepsTotal} vs ${g.stepsTotal}`);
    return { f, g, differences };
  };
}

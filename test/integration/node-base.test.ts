// kiln's Node.js base image as a drop-in for Docker Hub's node:20-slim: a Containerfile in the
// manner of real apps' (corepack enable, --chown=node:node, USER node, yarn) builds on it with
// kilnd, and its image runs as the node user.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BuildState } from "../../src/gen/kiln/v1/builder_pb.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { kilndPodmanEnv } from "../helpers/leftovers.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const REGISTRY = process.env.KILN_REGISTRY ?? "127.0.0.1:5000";

describe("the Node.js base image", () => {
  let dir: string, k: TestKilnd, repo: TestRepo;

  before(async () => {
    // Made (once: it is kept in the local registry) by the script the demo and the bench use.
    const r = spawnSync(join(ROOT, "scripts/base-images.sh"), ["node"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    dir = tempDir("node-base");
    repo = makeRepo(join(dir, "app"), {
      Containerfile: [
        `FROM ${REGISTRY}/kiln/node:20-slim`,
        // yarn classic as node:20-slim has it; then corepack's shims (which would fetch a package
        // manager a project names from the npm registry when it is run).
        "RUN yarn --version > /tmp/yarn.version && corepack enable && corepack --version > /tmp/corepack.version",
        "WORKDIR /home/node/app",
        "COPY --chown=node:node package.json ./",
        "USER node",
        'RUN cp /tmp/yarn.version /tmp/corepack.version . && node -e "console.log(process.versions.node)" > node.version',
        "COPY --chown=node:node index.js ./",
        'CMD ["node", "index.js"]',
        "",
      ].join("\n"),
      "package.json": '{"name":"app","version":"1.0.0","private":true}\n',
      "index.js": 'const fs = require("fs"); console.log(`${process.getuid()}:${process.getgid()} yarn ${fs.readFileSync("yarn.version", "utf8").trim()} corepack ${fs.readFileSync("corepack.version", "utf8").trim()} node ${fs.readFileSync("node.version", "utf8").trim()} owner ${fs.statSync("index.js").uid}`);\n',
    });
    k = await startKilnd({ data: join(dir, "data"), registry: REGISTRY });
  });
  after(async () => {
    await k?.stop();
    if (dir) removeTree(dir);
  });

  test("USER node, --chown=node:node, yarn and corepack, as on node:20-slim", async () => {
    const b = await k.buildCommit({ project: "node-app", url: repo.url, commit: repo.head(), image: `${REGISTRY}/test/node-app` });
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    const out = spawnSync("podman", ["run", "--rm", b.image], { env: kilndPodmanEnv(join(dir, "data")), encoding: "utf8" });
    assert.equal(out.status, 0, out.stderr);
    assert.equal(out.stdout, "1000:1000 yarn 1.22.22 corepack 0.34.7 node 20.20.2 owner 1000\n");
  });
});

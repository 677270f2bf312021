// The scheduler gives each build its project's secrets and credentials: build secrets and a
// registry password from files named in its config, and git credentials as a GitHub App's
// installation token minted per build (a JWT signed RS256, POST /app/installations/{id}/
// access_tokens) against a stand-in that follows GitHub's documented API. The repository is
// private (git http-backend behind Basic auth, accepting only minted tokens), the registry
// asks for credentials (htpasswd), and nothing secret is left on either side's disk.
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { DeploymentState, type Deployment } from "../../src/gen/kiln/v1/scheduler_pb.js";
import { loadSchedulerConfig } from "../../src/scheduler/config.js";
import { startScheduler, type RunningScheduler } from "../../src/scheduler/server.js";
import { createLogger } from "../../src/util/logger.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { serveGitHttp, type GitHttpServer } from "../helpers/git-http.js";
import { startGitHubStandIn, type GitHubStandIn } from "../helpers/github-standin.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { findLeaks } from "../helpers/leaks.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { freePort, waitFor } from "../helpers/wait.js";

const WEBHOOK_SECRET = "webhook-secret-for-the-secrets-test";

describe("scheduler: per-project secrets, registry credentials and GitHub App tokens", () => {
  let dir: string, reg: TestRegistry, gh: GitHubStandIn, git: GitHttpServer, repo: TestRepo, sched: RunningScheduler, url: string;
  const regUser = { username: "deployer", password: `reg-${randomBytes(12).toString("hex")}` };
  const npmToken = `npm-${randomBytes(12).toString("hex")}`;

  before(async () => {
    dir = tempDir("sched-secrets");
    reg = await startRegistry(join(dir, "registry"), { htpasswd: regUser });
    gh = await startGitHubStandIn(join(dir, "app.pem"));
    const base = pushBusyboxBase(reg.host, regUser);
    repo = makeRepo(join(dir, "git", "app.git"), {
      Containerfile: `FROM ${base}\nRUN --mount=type=secret,id=npm echo "npm token: $(cat /run/secrets/npm)"\nCOPY a.txt /a.txt\n`,
      "a.txt": "private\n",
    });
    git = await serveGitHttp(repo.dir, (u, p) => u === "x-access-token" && gh.tokens.has(p));
    writeFileSync(join(dir, "webhook-secret"), WEBHOOK_SECRET);
    writeFileSync(join(dir, "npm-token"), `${npmToken}\n`, { mode: 0o600 });
    writeFileSync(join(dir, "registry-password"), `${regUser.password}\n`, { mode: 0o600 });
    const configFile = join(dir, "scheduler.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        listen: `127.0.0.1:${await freePort()}`,
        data: "state",
        webhookSecretFile: "webhook-secret",
        projects: [
          {
            name: "private-app",
            git: git.url,
            github: "acme/private-app",
            image: `${reg.host}/acme/private-app`,
            secrets: { npm: { file: "npm-token" } },
            registryCredentials: [{ registry: reg.host, username: regUser.username, passwordFile: "registry-password" }],
            githubApp: { appId: gh.appId, installationId: gh.installationId, privateKeyFile: "app.pem", apiUrl: gh.apiUrl },
            machine: { driver: "local", data: "machine", idleTimeout: 2, insecureRegistries: [reg.host] },
          },
          {
            name: "not-installed",
            git: git.url,
            github: "acme/not-installed",
            image: `${reg.host}/acme/not-installed`,
            githubApp: { appId: gh.appId, installationId: "999", privateKeyFile: "app.pem", apiUrl: gh.apiUrl },
            machine: { driver: "local", data: "machine2", idleTimeout: 2, insecureRegistries: [reg.host] },
          },
        ],
      }),
    );
    sched = await startScheduler(loadSchedulerConfig(configFile), createLogger("silent"), { backoffMs: 50 });
    url = `http://127.0.0.1:${sched.server.address.port}`;
  });
  after(async () => {
    await sched?.stop();
    await Promise.all([reg?.stop(), gh?.stop(), git?.stop()]);
    if (dir) removeTree(dir);
  });

  const push = async (commit: string, repository = "acme/private-app") => {
    const body = JSON.stringify({ ref: "refs/heads/main", after: commit, deleted: false, repository: { full_name: repository } });
    const res = await fetch(`${url}/webhooks/github`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-github-event": "push", "x-hub-signature-256": `sha256=${createHmac("sha256", WEBHOOK_SECRET).update(body).digest("hex")}` },
      body,
    });
    assert.equal(res.status, 202);
    return ((await res.json()) as { deployment: string }).deployment;
  };
  const waitFinal = async (id: string) => {
    let d: Deployment | undefined;
    await waitFor(async () => {
      d = await sched.scheduler.get(id);
      return d.state === DeploymentState.SUCCEEDED || d.state === DeploymentState.FAILED;
    }, 180_000, `deployment ${id}`, 50);
    return d!;
  };
  const buildLog = (d: Deployment) => readFileSync(join(dir, "machine", "logs", `${d.buildId}.log`), "utf8");

  test("a push deploys a private repository to a private registry with a secret, the token minted for the build", async () => {
    const d = await waitFinal(await push(repo.head()));
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
    assert.ok(d.imageDigest);
    assert.deepEqual(gh.requests, [{ status: 201, repositories: ["private-app"] }], "one token, for the project's repository only");
    assert.ok(git.authorizations.some((a) => a.startsWith("Basic ")), "git used the token");
    assert.match(buildLog(d), /npm token: \*\*\*/);
  });

  test("a token is reused while it is valid; an installation GitHub does not know fails the deployment clearly", async () => {
    const d = await waitFinal(await push(repo.commit({ "a.txt": "again\n" })));
    assert.equal(d.state, DeploymentState.SUCCEEDED, d.error);
    assert.equal(gh.requests.length, 1, "the hour-long token was reused");
    const refused = await waitFinal(await push(repo.head(), "acme/not-installed"));
    assert.equal(refused.state, DeploymentState.FAILED);
    assert.match(refused.error, /GitHub App installation token: .*\/app\/installations\/999\/access_tokens answered 404: Not Found/);
  });

  test("no secret on the scheduler's or the machine's disk", () => {
    const needles = [npmToken, regUser.password, ...gh.tokens];
    assert.ok(readdirSync(join(dir, "machine")).length > 0);
    assert.deepEqual(findLeaks(needles, { dirs: [join(dir, "state"), join(dir, "machine")] }), []);
  });
});

// Credentials and secrets, end to end against real parts: a private git repository behind Basic
// auth (git http-backend), a registry with htpasswd (Basic) and one with token auth (Bearer, a
// token issuer with its own key pair), the base image on the private registry, and build secrets
// read by RUN steps. Every test greps the whole volume, kilnd's output, the logs, the records,
// the pushed layers and every process's command line for every secret it used.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BuildSchema, BuildState, type Build, type BuildRequestSchema } from "../../src/gen/kiln/v1/builder_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";

type BuildRequestInit = MessageInitShape<typeof BuildRequestSchema>;
import { pushBusyboxBase } from "../helpers/base-image.js";
import { serveGitHttp, type GitHttpServer } from "../helpers/git-http.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { viewImage } from "../helpers/image-fs.js";
import { findLeaks, watchArgv } from "../helpers/leaks.js";
import { logLines, waitForLine } from "../helpers/logs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { startTokenIssuer, type TokenIssuer } from "../helpers/token-issuer.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const msOf = (d: { seconds: bigint; nanos: number } | undefined) => (d ? Math.round(Number(d.seconds) * 1000 + d.nanos / 1e6) : -1);

function run(file: string, args: string[], o: { cwd: string; timeout: number; env: NodeJS.ProcessEnv }): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(file, args, { cwd: o.cwd, env: o.env, stdio: ["ignore", "pipe", "pipe"], timeout: o.timeout });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}
const token = (what: string) => `${what}-${randomBytes(12).toString("hex")}`;

const app = (base: string, marker = "v1") => ({
  Containerfile: [
    `FROM ${base}`,
    "WORKDIR /app",
    "COPY deps.txt ./",
    // Prints the secret raw and base64-encoded: both must be masked. The marker says the step ran.
    `RUN --mount=type=secret,id=npm_token echo "secret-step-ran ${marker}" && echo "token is $(cat /run/secrets/npm_token)" && echo "b64 $(base64 /run/secrets/npm_token)" && wc -c < /run/secrets/npm_token > token-length`,
    "COPY src/ ./src/",
    'CMD ["cat", "/app/src/a.txt"]',
    "",
  ].join("\n"),
  "deps.txt": "left-pad 1\n",
  "src/a.txt": "hello\n",
});

describe("credentials and secrets", () => {
  let dir: string;
  let reg: TestRegistry;
  let issuer: TokenIssuer;
  let tokenReg: TestRegistry;
  let git: GitHttpServer;
  let repo: TestRepo;
  let k: TestKilnd;
  const regUser = { username: "kiln", password: token("registry-password") };
  const tokenUser = { username: "deployer", password: token("token-registry-password") };
  const gitUser = { username: "x-access-token", password: token("ghs") };
  const secret1 = token("npm-secret-one");
  const secret2 = token("npm-secret-two");
  const secret3 = token("npm-secret-three");
  const wrong = token("wrong-password");
  const needles = [regUser.password, tokenUser.password, gitUser.password, secret1, secret2, secret3, wrong];
  const argv = watchArgv(needles);
  const builds: Build[] = [];
  /** What every kilnd of this test printed (they are restarted). */
  const outputs: string[] = [];
  let base: string;

  before(async () => {
    dir = tempDir("secrets");
    reg = await startRegistry(join(dir, "reg"), { htpasswd: regUser });
    issuer = await startTokenIssuer(dir, tokenUser);
    tokenReg = await startRegistry(join(dir, "tokenreg"), { token: issuer });
    base = pushBusyboxBase(reg.host, regUser);
    repo = makeRepo(join(dir, "src", "app.git"), app(base));
    git = await serveGitHttp(repo.dir, gitUser);
    k = await startKilnd({ data: join(dir, "data"), args: ["--insecure-registry", reg.host, "--insecure-registry", tokenReg.host] });
  });

  after(async () => {
    await k?.stop();
    await Promise.all([reg?.stop(), tokenReg?.stop(), issuer?.stop(), git?.stop()]);
    if (dir) removeTree(dir);
  });

  const request = (commit: string, o: { secret?: string; password?: string; image?: string; creds?: boolean; credsFor?: string; gitPassword?: string } = {}): BuildRequestInit => ({
    project: "private",
    source: { kind: { case: "git" as const, value: { url: git.url, commit, username: gitUser.username, password: o.gitPassword ?? gitUser.password } } },
    image: o.image ?? `${reg.host}/team/private`,
    secrets: { npm_token: o.secret ?? secret1 },
    registryCredentials: o.creds === false ? [] : [{ registry: o.credsFor ?? reg.host, username: regUser.username, password: o.password ?? regUser.password }],
  });

  async function build(req: BuildRequestInit): Promise<{ b: Build; log: string[] }> {
    const { build: accepted } = await k.client.build(req);
    const b = await k.waitDone(accepted!.id);
    builds.push(b);
    return { b, log: await logLines(k, b.id) };
  }

  test("a private repository, a private registry and a secret: built, pushed, the secret masked", async () => {
    const { b, log } = await build(request(repo.head()));
    assert.equal(b.state, BuildState.SUCCEEDED, `${b.error}\n${log.join("\n")}`);
    assert.ok(log.includes("token is ***"), "the echoed secret is masked");
    assert.ok(log.some((l) => /^b64 \*\*\*/.test(l)), `the base64 of the secret is masked: ${log.filter((l) => l.startsWith("b64")).join("|")}`);
    assert.ok(log.includes("secret-step-ran v1"));
    assert.ok(git.authorizations.length > 0, "git sent its credentials to the server");
    assert.ok(!log.some((l) => /Not a valid object name|^fatal:/.test(l)), "the cache probe of a commit not fetched yet says nothing in the log");
    assert.equal(await reg.digest("team/private", b.commit, `Basic ${Buffer.from(`${regUser.username}:${regUser.password}`).toString("base64")}`), b.imageDigest);
  });

  test("a warm build against the registry with credentials takes the fast path", async (t) => {
    const commit = repo.commit({ "src/a.txt": "hello, fast\n" });
    const { b, log } = await build(request(commit));
    assert.equal(b.state, BuildState.SUCCEEDED, `${b.error}\n${log.join("\n")}`);
    assert.equal(b.fastPath, true, log.join("\n"));
    t.diagnostic(`fast path with Basic auth: ${msOf(b.durations?.total)} ms in kilnd, push ${msOf(b.durations?.push)} ms`);
  });

  test("a change the secret's RUN step reads: kiln runs that step itself, with the secret mounted and masked", async () => {
    const commit = repo.commit({ "deps.txt": "left-pad 1.1\n" });
    const { b, log } = await build(request(commit));
    assert.equal(b.state, BuildState.SUCCEEDED, `${b.error}\n${log.join("\n")}`);
    assert.equal(b.fastPath, true, log.join("\n"));
    assert.ok(log.some((l) => /^fast path: started from step \d+/.test(l)), log.join("\n"));
    assert.ok(log.includes("secret-step-ran v1"), "kiln ran the step that mounts the secret");
    assert.ok(log.includes("token is ***"), "the echoed secret is masked");
    assert.ok(log.some((l) => /^b64 \*\*\*/.test(l)), "its base64 is masked");
    assert.ok(!log.some((l) => l.includes(secret1)));
    const { files } = await viewImage(reg.host, "team/private", commit, regUser);
    assert.equal(files.get("app/token-length")?.digest, `sha256:${createHash("sha256").update(`${secret1.length}\n`).digest("hex")}`, "the step read the secret");
    assert.equal(files.get("run/secrets/npm_token"), undefined, "the mount's target is not in the image");
  });

  test("a changed secret runs its RUN step again; an unchanged one keeps it cached", async () => {
    const c1 = repo.commit({ "src/a.txt": "hello, new secret\n" });
    const changed = await build(request(c1, { secret: secret2 }));
    assert.equal(changed.b.state, BuildState.SUCCEEDED, changed.b.error);
    assert.equal(changed.b.fastPath, false, "a changed secret is no fast path");
    assert.ok(changed.log.includes("secret-step-ran v1"), "the step that mounts the secret ran again");
    assert.ok(changed.log.includes("token is ***"));
    // The Containerfile changes after the RUN step: a full build, and the step comes from the cache.
    const c2 = repo.commit({ Containerfile: `${app(base).Containerfile}LABEL extra=1\n` });
    const same = await build(request(c2, { secret: secret2 }));
    assert.equal(same.b.state, BuildState.SUCCEEDED, same.b.error);
    assert.equal(same.b.fastPath, false);
    assert.ok(!same.log.includes("secret-step-ran v1"), `the step with an unchanged secret came from the cache:\n${same.log.join("\n")}`);
  });

  test("wrong or missing registry credentials: FAILED naming the registry and the refusal, kilnd serving", async () => {
    const c = repo.commit({ "deps.txt": "left-pad 2\n" });
    const host = reg.host.replace(/\./g, "\\.");
    // Wrong: the FROM image's look-up is refused first.
    const bad = await build(request(c, { password: wrong }));
    assert.equal(bad.b.state, BuildState.FAILED);
    assert.match(bad.b.error, new RegExp(`^FROM ${host}/base/busybox:1: registry ${host} refused .*401`));
    // Credentials for the base's repositories only: the base is looked up and pulled, podman's push is refused.
    const baseOnly = await build(request(c, { credsFor: `${reg.host}/base` }));
    assert.equal(baseOnly.b.state, BuildState.FAILED);
    assert.match(baseOnly.b.error, new RegExp(`^registry ${host} refused the push \\(401`));
    // None at all, and a base kilnd has not pulled yet.
    const other = pushBusyboxBase(reg.host, regUser, "2");
    const pull = await build(request(repo.commit({ Containerfile: `FROM ${other}\nCOPY src/ /src/\n` }), { creds: false }));
    assert.equal(pull.b.state, BuildState.FAILED);
    assert.match(pull.b.error, new RegExp(`^FROM ${other.replace(/\./g, "\\.")}: registry ${host} refused`), pull.b.error);
    repo.commit(app(base));
    assert.ok((await k.client.getInfo({})).version);
  });

  test("wrong git credentials: the Build call fails with a clear error that holds no password", async () => {
    // A commit kilnd has not fetched yet: one in its cache needs no credentials.
    const unseen = repo.commit({ "src/a.txt": "hello, unseen\n" });
    await assert.rejects(k.client.build(request(unseen, { gitPassword: wrong })), (e: unknown) => {
      assert.ok(e instanceof ConnectError);
      assert.equal(e.code, Code.FailedPrecondition);
      assert.match(e.message, /denied|could not read/i);
      assert.ok(!e.message.includes(wrong));
      return true;
    });
  });

  test("bad secrets and credentials are refused by field", async () => {
    const bad = async (patch: object, field: RegExp) => {
      await assert.rejects(k.client.build({ ...request(repo.head()), ...patch }), (e: unknown) => {
        assert.ok(e instanceof ConnectError && e.code === Code.InvalidArgument, String(e));
        assert.match(e.message, field);
        return true;
      });
    };
    await bad({ secrets: { "bad id!": "value-1234" } }, /secrets\["bad id!"\]/);
    await bad({ secrets: { short: "abc" } }, /secrets\["short"\].*shorter/);
    await bad({ registryCredentials: [{ registry: "not a host", username: "u", password: "pass1234" }] }, /registry_credentials\[0\]\.registry/);
    await bad({ registryCredentials: [{ registry: reg.host, username: "", password: "pass1234" }] }, /registry_credentials\[0\]\.username/);
  });

  test("token auth: kilnd's auth file, the Bearer flow, a fresh token when the registry refuses one, credential helpers", async (t) => {
    const authFile = join(dir, "auth.json");
    writeFileSync(authFile, JSON.stringify({ auths: { [tokenReg.host]: { auth: Buffer.from(`${tokenUser.username}:${tokenUser.password}`).toString("base64") } } }), { mode: 0o600 });
    await k.stop();
    outputs.push(k.output());
    k = await startKilnd({ data: join(dir, "data"), args: ["--insecure-registry", reg.host, "--insecure-registry", tokenReg.host, "--registry-auth-file", authFile] });
    const image = `${tokenReg.host}/team/tokened`;
    // The base stays on the htpasswd registry (the request's credentials); the push goes to the token registry (the auth file's).
    const full = await build(request(repo.head(), { image, secret: secret2 }));
    assert.equal(full.b.state, BuildState.SUCCEEDED, `${full.b.error}\n${full.log.join("\n")}`);
    const c = repo.commit({ "src/a.txt": "hello, bearer\n" });
    const issuedBefore = issuer.issued;
    issuer.expireNext(1);
    const fast = await build(request(c, { image, secret: secret2 }));
    assert.equal(fast.b.state, BuildState.SUCCEEDED, `${fast.b.error}\n${fast.log.join("\n")}`);
    assert.equal(fast.b.fastPath, true, fast.log.join("\n"));
    t.diagnostic(`fast path with Bearer tokens (one refused and replaced): ${msOf(fast.b.durations?.total)} ms in kilnd, push ${msOf(fast.b.durations?.push)} ms`);
    assert.ok(issuer.issued >= issuedBefore + 2, `an expired token was replaced (${issuer.issued - issuedBefore} issued)`);
    assert.equal(await tokenReg.digest("team/tokened", c, `Bearer ${issuer.mint(["repository:team/tokened:pull"])}`), fast.b.imageDigest);

    writeFileSync(authFile, JSON.stringify({ auths: { [tokenReg.host]: { auth: Buffer.from(`${tokenUser.username}:${wrong}`).toString("base64") } } }));
    const refused = await build(request(repo.commit({ "src/a.txt": "hello, refused\n" }), { image, secret: secret2 }));
    assert.equal(refused.b.state, BuildState.FAILED);
    assert.match(refused.b.error, new RegExp(`registry ${tokenReg.host.replace(/\./g, "\\.")} refused`));

    // credHelpers: a docker-credential-NAME program on kilnd's PATH, asked by podman and by the fast path.
    const bin = join(dir, "bin");
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(dir, "helper-secret"), tokenUser.password, { mode: 0o600 });
    writeFileSync(
      join(bin, "docker-credential-kilntest"),
      `#!/bin/sh\n[ "$1" = get ] || exit 1\nread -r server\n[ "$server" = "${tokenReg.host}" ] || { echo "credentials not found in native keychain"; exit 1; }\nprintf '{"ServerURL":"%s","Username":"${tokenUser.username}","Secret":"%s"}\\n' "$server" "$(cat ${dir}/helper-secret)"\n`,
      { mode: 0o755 },
    );
    writeFileSync(authFile, JSON.stringify({ credHelpers: { [tokenReg.host]: "kilntest" } }));
    await k.stop();
    outputs.push(k.output());
    k = await startKilnd({
      data: join(dir, "data"),
      args: ["--insecure-registry", reg.host, "--insecure-registry", tokenReg.host, "--registry-auth-file", authFile],
      env: { PATH: `${bin}:${process.env.PATH}` },
    });
    const viaHelper = await build(request(repo.commit({ "src/a.txt": "hello, helper\n" }), { image, secret: secret2 }));
    assert.equal(viaHelper.b.state, BuildState.SUCCEEDED, `${viaHelper.b.error}\n${viaHelper.log.join("\n")}`);
    assert.equal(viaHelper.b.fastPath, true, "the fast path got its credentials from the helper");
    const fullViaHelper = await build(request(repo.commit({ Containerfile: `${app(base).Containerfile}LABEL helper=1\n` }), { image, secret: secret2 }));
    assert.equal(fullViaHelper.b.state, BuildState.SUCCEEDED, `${fullViaHelper.b.error}\n${fullViaHelper.log.join("\n")}`);
    assert.equal(fullViaHelper.b.fastPath, false, "podman pushed with the helper's credentials");
  });

  test("kill -9 during a RUN that mounts a secret: the secret is on tmpfs only, and gone after the restart", async () => {
    const slow = repo.commit({
      Containerfile: `FROM ${base}\nRUN --mount=type=secret,id=npm_token echo waiting-with-secret && sleep 60\n`,
    });
    const { build: accepted } = await k.client.build(request(slow));
    await waitForLine(k.client, accepted!.id, "waiting-with-secret", 60_000, true);
    assert.deepEqual(findLeaks([secret1], { dirs: [join(dir, "data")] }), [], "not on the volume while the step runs");
    const onTmpfs = findLeaks([secret1], { dirs: ["/dev/shm", "/run"] });
    assert.ok(onTmpfs.length > 0, "the secret is on tmpfs while the step runs");
    await k.kill9();
    outputs.push(k.output());
    k = await startKilnd({ data: join(dir, "data"), args: ["--insecure-registry", reg.host, "--insecure-registry", tokenReg.host] });
    await k.client.listBuilds({});
    assert.deepEqual(findLeaks([secret1], { dirs: ["/dev/shm", "/run"] }), [], "the restart removed the secret files");
    builds.push((await k.client.getBuild({ buildId: accepted!.id })).build!);
  });

  test("the kiln CLI: --secret from a file or a variable, registry and git passwords from files", async () => {
    const pw = join(dir, "registry-password");
    const gitPw = join(dir, "git-password");
    const secretFile = join(dir, "npm-token");
    writeFileSync(pw, `${regUser.password}\n`, { mode: 0o600 });
    writeFileSync(gitPw, `${gitUser.password}\n`, { mode: 0o600 });
    writeFileSync(secretFile, secret1, { mode: 0o600 });
    const commit = repo.commit({ ...app(base), "src/a.txt": "hello, cli\n" });
    // Not spawnSync: the git server the build fetches from runs in this process.
    const kiln = (secretFlag: string, env: Record<string, string> = {}) =>
      run(
        process.execPath,
        ["--import", "tsx", "src/bin/kiln.ts", "--addr", k.addr, "build", "--project", "private", "--git", git.url, "--commit", commit, "--image", `${reg.host}/team/private`,
          "--secret", secretFlag, "--registry-user", regUser.username, "--registry-password-file", pw, "--git-user", gitUser.username, "--git-password-file", gitPw, "--follow"],
        { cwd: ROOT, timeout: 120_000, env: { ...process.env, ...env } },
      );
    const fromFile = await kiln(`id=npm_token,src=${secretFile}`);
    assert.equal(fromFile.status, 0, fromFile.stderr + fromFile.stdout);
    assert.match(fromFile.stdout, /^SUCCEEDED /m);
    // A value no build has used yet: the step runs again.
    const fromEnv = await kiln("id=npm_token,env=KILN_TEST_NPM_TOKEN", { KILN_TEST_NPM_TOKEN: secret3 });
    assert.equal(fromEnv.status, 0, fromEnv.stderr + fromEnv.stdout);
    assert.match(fromEnv.stdout, /^token is \*\*\*$/m, `a changed secret: the step ran again, masked:\n${fromEnv.stdout}`);
    assert.ok(!(fromFile.stdout + fromEnv.stdout + fromFile.stderr + fromEnv.stderr).includes(secret3));
    const missing = await kiln("id=npm_token,env=KILN_TEST_UNSET_VARIABLE");
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /KILN_TEST_UNSET_VARIABLE is not set/);
    for (const id of [fromFile, fromEnv].map((r) => /^SUCCEEDED (\S+)/m.exec(r.stdout)?.[1])) if (id) builds.push({ id } as Build);
  });

  test("a build arg named like a secret: a warning pointing at secrets, its value masked, the command line shows names only, the fast path's key holds no value", async () => {
    const argValue = token("npm-arg");
    const commit = repo.commit({ Containerfile: `FROM ${base}\nARG NPM_TOKEN\nARG PLAIN\nRUN echo "arg is $NPM_TOKEN, plain is $PLAIN"\nCOPY src/ /src/\n` });
    const { b, log } = await build({ ...request(commit), buildArgs: { NPM_TOKEN: argValue, PLAIN: "plain-value" } });
    assert.equal(b.state, BuildState.SUCCEEDED, b.error);
    assert.ok(log.some((l) => /^warning: build arg NPM_TOKEN looks like a secret.*secrets/.test(l)), log.join("\n"));
    assert.ok(!log.some((l) => l.startsWith("warning: build arg PLAIN")));
    assert.ok(log.some((l) => l === "arg is ***, plain is plain-value"), "the value is masked where the build prints it");
    const command = log.find((l) => l.startsWith("build: buildah bud "))!;
    assert.match(command, / --build-arg NPM_TOKEN=… /);
    assert.match(command, / --build-arg PLAIN=… /);
    assert.ok(!log.some((l) => l.includes(argValue)), "the value is in no log line");
    // The image's own config records build args in its history (Docker's semantics: they are not
    // secret), and the base keeps a copy of that config; everything else in it holds no value.
    await k.fastPathRecord(b.id);
    const stored = JSON.parse(readFileSync(join(dir, "data", "fastpath", "private.json"), "utf8")) as Record<string, unknown>;
    assert.ok(stored.key, "a base was written");
    delete stored.config;
    assert.deepEqual(findLeaks([argValue, "plain-value"], { texts: { base: JSON.stringify(stored) } }), [], "the fast path's key compares build args by digest");
  });

  test("no secret, password or token anywhere: volume, logs, records, kilnd's output, layers, argv", async () => {
    const found = await argv.stop();
    assert.ok(argv.samples() > 10, "argv was sampled during the builds");
    assert.deepEqual(found, [], "no process had a secret in its command line");
    const texts: Record<string, string> = { "kilnd output": [...outputs, k.output()].join("\n") };
    for (const b of builds) {
      texts[`log of ${b.id}`] = (await logLines(k, b.id)).join("\n");
      texts[`record of ${b.id}`] = toJsonString(BuildSchema, (await k.client.getBuild({ buildId: b.id })).build!);
    }
    assert.deepEqual(findLeaks(needles, { dirs: [join(dir, "data"), "/dev/shm"], texts }), []);
    // Every file of both registries' storage, layer blobs unpacked.
    assert.deepEqual(findLeaks(needles, { dirs: [join(dir, "reg", "data"), join(dir, "tokenreg", "data")], gunzip: true }), []);
  });
});

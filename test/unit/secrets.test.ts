// The pieces that keep secrets secret, each against what it promises: the masker (properties
// over random values and surroundings, with fast-check), the auth challenge parser, credential
// look-up, the secret-mount rewrite, and git's credential helper run by real git.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, test } from "node:test";
import fc from "fast-check";
import { gitEnv } from "../../src/git/env.js";
import { parseGitUrl, withCredentials } from "../../src/git/url.js";
import { parseChallenge } from "../../src/registry/auth.js";
import { createRegistryCredentials } from "../../src/registry/credentials.js";
import { registryRefusal } from "../../src/registry/refusal.js";
import { createMasker, MASK } from "../../src/secrets/masker.js";
import { planSecretMounts } from "../../src/secrets/secret-mounts.js";
import { KilnError } from "../../src/errors/kiln-error.js";

const SEED = 20261201;
const secretArb = fc.string({ minLength: 4, maxLength: 40, unit: "binary" }).filter((s) => s.trim().length >= 4 && !s.includes("*"));
const textArb = fc.string({ maxLength: 30, unit: "binary" });

describe("masker", () => {
  test("a value is masked wherever it stands in a line", () => {
    fc.assert(
      fc.property(secretArb, textArb, textArb, (s, p, q) => {
        const out = createMasker([s]).mask(`${p}${s}${q}`);
        assert.ok(!out.includes(s), JSON.stringify({ s, p, q, out }));
        assert.ok(out.includes(MASK));
      }),
      { seed: SEED, numRuns: 300 },
    );
  });
  // Base64 fragments shorter than 6 characters are not masked (they would mask unrelated base64):
  // values of 6 bytes or more.
  test("inside base64 of a longer text, at any alignment, and URL- and JSON-encoded", () => {
    fc.assert(
      fc.property(secretArb.filter((s) => Buffer.byteLength(s) >= 6), textArb, textArb, (s, p, q) => {
        const m = createMasker([s]);
        const b64 = Buffer.from(`${p}${s}${q}`).toString("base64");
        assert.ok(m.mask(b64).includes(MASK), JSON.stringify({ s, p, q, b64 }));
        assert.ok(m.mask(Buffer.from(`${p}${s}${q}`).toString("base64url")).includes(MASK));
        assert.ok(!m.mask(encodeURIComponent(`${p}${s}${q}`)).includes(encodeURIComponent(s)));
        assert.ok(!m.mask(JSON.stringify(`${p}${s}${q}`)).includes(JSON.stringify(s).slice(1, -1)));
      }),
      { seed: SEED, numRuns: 300 },
    );
  });
  test("a Basic auth header made from a password is masked", () => {
    const m = createMasker(["hunter2-is-long"]);
    const header = `Authorization: Basic ${Buffer.from("deploy:hunter2-is-long").toString("base64")}`;
    assert.match(m.mask(header), /\*\*\*/);
  });
  test("each line of a multi-line secret, values added later, and short values ignored", () => {
    const m = createMasker(["-----BEGIN KEY-----\nAAAAsecretline\n-----END KEY-----", "abc"]);
    assert.equal(m.mask("AAAAsecretline"), MASK);
    assert.equal(m.mask("abc def"), "abc def");
    m.add("late-token-1234");
    assert.equal(m.mask("x late-token-1234 y"), `x ${MASK} y`);
  });
});

describe("registry auth", () => {
  test("WWW-Authenticate challenges: Bearer with quoted parameters, Basic", () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull,push"'), {
      scheme: "bearer",
      params: { realm: "https://auth.example/token", service: "registry.example", scope: "repository:team/app:pull,push" },
    });
    assert.deepEqual(parseChallenge('Basic realm="kiln"'), { scheme: "basic", params: { realm: "kiln" } });
  });
  test("credentials: the request's win, the most specific key first, helpers dropped for a request's host", async () => {
    const machine = {
      auths: { "reg.example": { auth: Buffer.from("machine:m-pass").toString("base64") }, "reg.example/team": { auth: Buffer.from("team:t-pass").toString("base64") } },
      credHelpers: { "other.example": "ecr-login", "reg.example": "gcloud" },
    };
    const c = createRegistryCredentials(machine, [{ registry: "reg.example/team/app", username: "req", password: "r-pass" }], {});
    assert.deepEqual(await c.lookup("reg.example", "team/app"), { username: "req", password: "r-pass" });
    assert.deepEqual(await c.lookup("reg.example", "team/other"), { username: "team", password: "t-pass" });
    assert.deepEqual(await c.lookup("reg.example", "solo"), { username: "machine", password: "m-pass" });
    assert.equal(await c.lookup("nowhere.example", "x"), undefined);
    const file = c.authFile()!;
    assert.deepEqual(Object.keys(file.auths!).sort(), ["reg.example", "reg.example/team", "reg.example/team/app"]);
    assert.deepEqual(file.credHelpers, { "other.example": "ecr-login" });
    assert.deepEqual(c.passwords.sort(), ["m-pass", "r-pass", "t-pass"]);
  });
  test("a registry's refusal in podman's error lines, not in a RUN step's output", () => {
    const e = registryRefusal(["Error: creating build container: initializing source docker://reg.example:5000/base/bb:1: reading manifest 1 in reg.example:5000/base/bb: unauthorized: authentication required"], "pull");
    assert.ok(e instanceof KilnError);
    assert.match(e.message, /registry reg\.example:5000 refused a pull .*401/);
    assert.equal(registryRefusal(["sh: can't create /x: Permission denied", "Error: building at STEP \"RUN x\": exit status 1"], "pull"), undefined);
  });
});

describe("secret mounts", () => {
  const digests = new Map([["npm", "00aa11bb22cc33dd"]]);
  test("the id is keyed on the value's digest and the file stays where the step reads it", () => {
    const text = "FROM x\nRUN --mount=type=secret,id=npm npm ci\nRUN --mount=type=secret,id=npm,target=/root/.npmrc,required npm ci\n";
    const plan = planSecretMounts(text, digests);
    assert.equal(
      plan.text,
      "FROM x\nRUN --mount=type=secret,id=npm.kiln-00aa11bb22cc33dd,target=/run/secrets/npm npm ci\nRUN --mount=type=secret,id=npm.kiln-00aa11bb22cc33dd,target=/root/.npmrc,required npm ci\n",
    );
    assert.deepEqual([...plan.renamed], [["npm.kiln-00aa11bb22cc33dd", "npm"]]);
  });
  test("other mounts, unknown ids, the command's own text and other instructions stay as written", () => {
    const text = "FROM x\nRUN --mount=type=cache,target=/c --mount=type=secret,id=other echo --mount=type=secret,id=npm\nCOPY --mount=type=secret,id=npm a b\n";
    assert.equal(planSecretMounts(text, digests).text, text);
  });
  test("a line continuation before the command, and env= refused with a clear error", () => {
    const text = "FROM x\nRUN --mount=type=secret,id=npm \\\n    npm ci\n";
    assert.match(planSecretMounts(text, digests).text, /id=npm\.kiln-00aa11bb22cc33dd,target=\/run\/secrets\/npm \\\n    npm ci/);
    assert.throws(() => planSecretMounts("FROM x\nRUN --mount=type=secret,id=npm,env=NPM npm ci\n", digests), /line 2: .*env= is not supported/);
  });
});

describe("git credentials", () => {
  test("real git gets them from the helper in its environment; the URL git is given has none", () => {
    const url = withCredentials(parseGitUrl("https://old-token@git.example/acme/app.git"), "x-access-token", "ghs_new-installation-token");
    assert.equal(url.raw, "https://git.example/acme/app.git");
    const out = execFileSync("git", ["credential", "fill"], { input: "protocol=https\nhost=git.example\n\n", env: gitEnv({ PATH: process.env.PATH ?? "/usr/bin" }, url), encoding: "utf8" });
    assert.match(out, /^username=x-access-token$/m);
    assert.match(out, /^password=ghs_new-installation-token$/m);
    assert.ok(url.secrets.includes("ghs_new-installation-token"));
  });
  test("credentials in an https URL move out of it; ssh URLs take none", () => {
    const url = parseGitUrl("https://user:p%40ss-word@git.example/acme/app.git");
    assert.equal(url.raw, "https://git.example/acme/app.git");
    assert.deepEqual(url.credentials, { username: "user", password: "p@ss-word" });
    assert.throws(() => withCredentials(parseGitUrl("ssh://git@git.example/acme/app.git"), "u", "password"), /http and https/);
  });
});

// Input validation: git URLs (and their redaction), image repositories, repository paths.
import assert from "node:assert/strict";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { BuildRequestSchema } from "../../src/gen/kiln/v1/builder_pb.js";
import { KilnError } from "../../src/errors/kiln-error.js";
import { parseGitUrl } from "../../src/git/url.js";
import { createMasker } from "../../src/secrets/masker.js";
import { validateBuildRequest } from "../../src/validate/build-request.js";
import { parseImageRepo } from "../../src/validate/image-ref.js";
import { checkRepoPath, resolveInside } from "../../src/validate/repo-path.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

const invalid = (fn: () => unknown, message: RegExp) =>
  assert.throws(fn, (e: unknown) => e instanceof KilnError && e.code === "invalid_argument" && message.test(e.message));

describe("git URLs", () => {
  test("the allowed schemes and the scp-like ssh form pass", () => {
    for (const u of ["https://github.com/acme/gw.git", "http://git.local/x", "ssh://git@github.com/acme/gw.git", "git://host/x.git", "file:///srv/repo", "git@github.com:acme/gw.git"]) {
      assert.equal(parseGitUrl(u).raw, u);
    }
  });
  test("other schemes, ext::, a leading dash, whitespace and hosts on file URLs are refused", () => {
    invalid(() => parseGitUrl("ext::sh -c evil"), /source\.git\.url/);
    invalid(() => parseGitUrl("ext::evil"), /is not a URL|scheme/);
    invalid(() => parseGitUrl("fd::17"), /scheme|is not a URL/);
    invalid(() => parseGitUrl("-uevil"), /must not start with '-'/);
    invalid(() => parseGitUrl("https://a b/c"), /whitespace/);
    invalid(() => parseGitUrl("ftp://x/y"), /scheme "ftp"/);
    invalid(() => parseGitUrl("file://otherhost/srv/repo"), /must not name a host/);
    invalid(() => parseGitUrl(""), /is required/);
  });
  test("credentials are removed from the recorded URL and masked in output", () => {
    const u = parseGitUrl("https://x-access-token:s3cr3t-t0ken@github.com/acme/gw.git");
    assert.equal(u.redacted, "https://github.com/acme/gw.git");
    assert.ok(u.secrets.includes("s3cr3t-t0ken"));
    assert.equal(createMasker(u.secrets).mask("fatal: could not read from https://x-access-token:s3cr3t-t0ken@github.com"), "fatal: could not read from https://***:***@github.com");
    const ssh = parseGitUrl("ssh://git:pw123@host/x.git");
    assert.equal(ssh.redacted, "ssh://git@host/x.git");
  });
  test("file URLs carry their local path", () => {
    assert.equal(parseGitUrl("file:///srv/my%20repo").localPath, "/srv/my repo");
  });
});

describe("image repositories", () => {
  test("registry host, port and path are understood", () => {
    assert.deepEqual(parseImageRepo("registry.example:5000/acme/gw"), { repository: "registry.example:5000/acme/gw", registry: "registry.example:5000" });
    assert.deepEqual(parseImageRepo("127.0.0.1:5000/x"), { repository: "127.0.0.1:5000/x", registry: "127.0.0.1:5000" });
    assert.deepEqual(parseImageRepo("ghcr.io/acme/gw"), { repository: "ghcr.io/acme/gw", registry: "ghcr.io" });
    assert.deepEqual(parseImageRepo("acme/gw"), { repository: "acme/gw" }, "no host: local only");
    assert.deepEqual(parseImageRepo("localhost/acme/gw"), { repository: "localhost/acme/gw" });
  });
  test("tags, digests, uppercase and junk are refused", () => {
    invalid(() => parseImageRepo("r.example/a:v1"), /must not carry a tag/);
    invalid(() => parseImageRepo("r.example/a@sha256:abc"), /must not carry a digest/);
    invalid(() => parseImageRepo("r.example/Acme"), /is not an image repository/);
    invalid(() => parseImageRepo("r.example//a"), /is not an image repository/);
    invalid(() => parseImageRepo("a/../b"), /is not an image repository/);
  });
});

describe("repository paths", () => {
  const dir = tempDir("paths");
  after(() => removeTree(dir));
  test("relative paths are normalised; .., absolute and dash-led paths are refused", () => {
    assert.equal(checkRepoPath("./a//b/", "containerfile"), "a/b");
    assert.equal(checkRepoPath("./", "context"), ".");
    assert.equal(checkRepoPath(".", "context"), ".");
    invalid(() => checkRepoPath("a/../../b", "context"), /must not contain '\.\.'/);
    invalid(() => checkRepoPath("/etc", "context"), /must be relative/);
    invalid(() => checkRepoPath("-f", "containerfile"), /must not start with '-'/);
  });
  test("symlinks inside the checkout are followed; ones that leave it are refused", async () => {
    const root = join(dir, "co");
    mkdirSync(join(root, "sub"), { recursive: true });
    writeFileSync(join(root, "sub", "Containerfile"), "FROM x\n");
    symlinkSync("sub", join(root, "inside"));
    symlinkSync("/etc", join(root, "outside"));
    symlinkSync("loop", join(root, "loop"));
    assert.equal(await resolveInside(root, "inside/Containerfile", "containerfile"), join(root, "sub", "Containerfile"));
    await assert.rejects(resolveInside(root, "outside/hostname", "containerfile"), /leads out of the checkout/);
    await assert.rejects(resolveInside(root, "loop", "containerfile"), /symlink loop/);
    await assert.rejects(resolveInside(root, "missing", "containerfile"), (e: KilnError) => e.code === "failed_precondition");
  });
});

describe("BuildRequest", () => {
  const req = (over: Record<string, unknown> = {}) =>
    create(BuildRequestSchema, {
      project: "acme-gw",
      source: { kind: { case: "git", value: { url: "https://github.com/acme/gw.git", commit: "a".repeat(40) } } },
      image: "registry.example:5000/acme/gw",
      ...over,
    });
  test("a good request becomes a spec with defaults", () => {
    const s = validateBuildRequest(req());
    assert.equal(s.context, ".");
    assert.equal(s.containerfile, undefined);
    assert.equal(s.image.registry, "registry.example:5000");
  });
  test("no image means a local image named after the project", () => {
    assert.equal(validateBuildRequest(req({ image: "" })).image.repository, "localhost/kiln/acme-gw");
  });
  test("a missing source is refused", () => {
    invalid(() => validateBuildRequest(req({ source: undefined })), /^source\.git: is required/);
  });
  test("too many build args are refused", () => {
    const buildArgs = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`A${i}`, "x"]));
    invalid(() => validateBuildRequest(req({ buildArgs })), /^build_args: has more than 64/);
  });
});

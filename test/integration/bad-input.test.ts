// Bad input gets a clear error with the right code, and kilnd keeps serving.
import assert from "node:assert/strict";
import http2 from "node:http2";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { BuildState, type BuildRequest } from "../../src/gen/kiln/v1/builder_pb.js";
import { helloApp } from "../helpers/apps.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";

type Req = Partial<Omit<BuildRequest, "source" | "$typeName">> & { url?: string; commit?: string };

describe("bad input", () => {
  let dir: string, reg: TestRegistry, kilnd: TestKilnd, repo: TestRepo;

  before(async () => {
    dir = tempDir("badinput");
    reg = await startRegistry(join(dir, "registry"));
    const base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), { ...helloApp(base), "etc-link": { symlink: "/etc" }, "up-link": { symlink: "../.." } });
    kilnd = await startKilnd({ data: join(dir, "data"), registry: reg.host });
  });
  after(async () => {
    await kilnd?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  const build = (r: Req) =>
    kilnd.client.build({
      project: r.project ?? "bad",
      source: { kind: { case: "git", value: { url: r.url ?? repo.url, commit: r.commit ?? repo.head() } } },
      image: r.image ?? `${reg.host}/test/bad`,
      containerfile: r.containerfile ?? "",
      context: r.context ?? "",
      buildArgs: r.buildArgs ?? {},
      target: r.target ?? "",
    });

  const refused = async (p: Promise<unknown>, code: Code, field: RegExp) => {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof ConnectError, String(e));
      assert.equal(Code[e.code], Code[code], e.rawMessage);
      assert.match(e.rawMessage, field);
      assert.doesNotMatch(e.rawMessage, /\bat \/|node_modules|\.ts:\d+/, "no stack or internal path");
      return true;
    });
  };

  const cases: Array<[string, Req, Code, RegExp]> = [
    ["an empty project", { project: "" }, Code.InvalidArgument, /^project: is required/],
    ["a project name with /", { project: "acme/gw" }, Code.InvalidArgument, /^project: .* is not a project name/],
    ["an oversize project name", { project: "p".repeat(200) }, Code.InvalidArgument, /^project:/],
    ["an empty git URL", { url: "" }, Code.InvalidArgument, /^source\.git\.url: is required/],
    ["an ext:: git URL", { url: "ext::sh -c touch% /tmp/pwned" }, Code.InvalidArgument, /^source\.git\.url:/],
    ["a git URL starting with -", { url: "--upload-pack=touch /tmp/pwned" }, Code.InvalidArgument, /^source\.git\.url: must not start with '-'/],
    ["an ftp git URL", { url: "ftp://example.com/repo.git" }, Code.InvalidArgument, /^source\.git\.url: scheme "ftp" is not allowed/],
    ["an oversize git URL", { url: `https://example.com/${"a".repeat(3000)}` }, Code.InvalidArgument, /^source\.git\.url: is longer than/],
    ["a file:// path that does not exist", { url: `file://${"/nonexistent/kiln/repo"}` }, Code.NotFound, /^source\.git\.url: file:\/\/\/nonexistent\/kiln\/repo does not exist/],
    ["an empty commit", { commit: "" }, Code.InvalidArgument, /^source\.git\.commit: is required/],
    ["a malformed commit", { commit: "main" }, Code.InvalidArgument, /^source\.git\.commit: "main" is not a full commit SHA/],
    ["a short commit", { commit: "abc123" }, Code.InvalidArgument, /^source\.git\.commit:/],
    ["an unknown commit", { commit: "0123456789abcdef0123456789abcdef01234567" }, Code.NotFound, /^source\.git\.commit: commit 0123456789abcdef0123456789abcdef01234567 was not found/],
    ["a Containerfile path with ..", { containerfile: "../Containerfile" }, Code.InvalidArgument, /^containerfile: must not contain '\.\.'/],
    ["an absolute Containerfile path", { containerfile: "/etc/passwd" }, Code.InvalidArgument, /^containerfile: must be relative/],
    ["a Containerfile through a symlink out of the checkout", { containerfile: "etc-link/hostname" }, Code.InvalidArgument, /^containerfile: .* leads out of the checkout through a symlink/],
    ["a context through a symlink out of the checkout", { context: "up-link" }, Code.InvalidArgument, /^context: .* leads out of the checkout/],
    ["a Containerfile that is not in the commit", { containerfile: "nope/Containerfile" }, Code.FailedPrecondition, /^containerfile: "nope\/Containerfile" does not exist in the commit/],
    ["a build arg value with a newline", { buildArgs: { A: "x\nRUN evil" } }, Code.InvalidArgument, /^build_args\[A\]: must not contain a newline/],
    ["a build arg with a bad name", { buildArgs: { "A B": "x" } }, Code.InvalidArgument, /^build_args\["A B"\]: is not a valid build argument name/],
    ["an image that is not a reference", { image: "Not An Image!" }, Code.InvalidArgument, /^image: .* is not an image repository/],
    ["an image with a tag", { image: `${"127.0.0.1:5000"}/test/app:v1` }, Code.InvalidArgument, /^image: must not carry a tag/],
    ["an image with a digest", { image: `example.com/app@sha256:${"a".repeat(64)}` }, Code.InvalidArgument, /^image: must not carry a digest/],
    ["an oversize image", { image: `example.com/${"a".repeat(300)}` }, Code.InvalidArgument, /^image: is longer than/],
    ["a bad target", { target: "--evil" }, Code.InvalidArgument, /^target:/],
  ];
  for (const [what, req, code, message] of cases) {
    test(`Build refuses ${what}`, () => refused(build(req), code, message));
  }

  test("a message over 4 MiB is refused with ResourceExhausted", () =>
    refused(build({ buildArgs: { BIG: "x".repeat(5 * 1024 * 1024) } }), Code.ResourceExhausted, /message size .* is larger than configured readMaxBytes|max/i));

  test("unknown build ids: NotFound for GetBuild, Cancel and StreamLogs; malformed ones: InvalidArgument", async () => {
    await refused(kilnd.client.getBuild({ buildId: "no-such-build" }), Code.NotFound, /^build_id: no build "no-such-build"/);
    await refused(kilnd.client.cancel({ buildId: "no-such-build" }), Code.NotFound, /^build_id:/);
    await refused((async () => { for await (const _ of kilnd.client.streamLogs({ buildId: "no-such-build" })) void _; })(), Code.NotFound, /^build_id:/);
    await refused(kilnd.client.getBuild({ buildId: "../../etc/passwd" }), Code.InvalidArgument, /^build_id: .* is not a build id/);
    await refused(kilnd.client.getBuild({ buildId: "" }), Code.InvalidArgument, /^build_id: is required/);
    await refused(kilnd.client.listBuilds({ project: "a/b" }), Code.InvalidArgument, /^project:/);
  });

  test("malformed JSON is refused with InvalidArgument", async () => {
    const r = await fetch(`${kilnd.addr}/kiln.v1.BuilderService/Build`, { method: "POST", headers: { "content-type": "application/json" }, body: "{not json" });
    assert.equal(r.status, 400);
    assert.equal(((await r.json()) as { code: string }).code, "invalid_argument");
  });

  test("a body that is not the protobuf message it claims to be: InvalidArgument in every protocol", async () => {
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0x01, 0x02]);
    const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, garbage.length]), garbage]);
    const connect = await fetch(`${kilnd.addr}/kiln.v1.BuilderService/GetBuild`, { method: "POST", headers: { "content-type": "application/proto" }, body: garbage });
    assert.equal(connect.status, 400);
    assert.match(((await connect.json()) as { code: string; message: string }).code, /^invalid_argument$/);
    const web = await fetch(`${kilnd.addr}/kiln.v1.BuilderService/GetBuild`, { method: "POST", headers: { "content-type": "application/grpc-web+proto" }, body: envelope });
    assert.match(Buffer.from(await web.arrayBuffer()).toString("latin1"), /grpc-status: ?3\b/);
    const stream = await fetch(`${kilnd.addr}/kiln.v1.BuilderService/StreamLogs`, { method: "POST", headers: { "content-type": "application/connect+proto" }, body: envelope });
    assert.match(Buffer.from(await stream.arrayBuffer()).toString("latin1"), /"code":"invalid_argument"/);
    const session = http2.connect(kilnd.addr);
    try {
      const req = session.request({ ":method": "POST", ":path": "/kiln.v1.BuilderService/GetBuild", "content-type": "application/grpc", te: "trailers" });
      const trailers = new Promise<http2.IncomingHttpHeaders>((r) => req.once("trailers", r));
      req.on("data", () => {});
      req.end(envelope);
      const t = await trailers;
      assert.equal(t["grpc-status"], "3");
      assert.match(decodeURIComponent(String(t["grpc-message"])), /not a kiln\.v1\.GetBuildRequest message/);
    } finally {
      session.close();
    }
    // A well-formed message still gets its own answer.
    await assert.rejects(kilnd.client.getBuild({ buildId: "abc" }), (e: unknown) => e instanceof ConnectError && e.code === Code.NotFound);
  });

  test("builds refused after they were accepted are recorded FAILED, and kilnd still builds", async () => {
    const { builds } = await kilnd.client.listBuilds({ project: "bad" });
    const failed = builds.filter((b) => b.state === BuildState.FAILED);
    assert.ok(failed.some((b) => /was not found/.test(b.error)), "the unknown commit is on record");
    assert.ok(failed.some((b) => /leads out of the checkout/.test(b.error)));
    const { build: ok } = await build({ project: "good" });
    const done = await kilnd.waitDone(ok!.id);
    assert.equal(done.state, BuildState.SUCCEEDED, done.error);
  });
});

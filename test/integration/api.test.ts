// The API surface from outside: one port for h2c and HTTP/1.1, reflection through buf curl over
// gRPC, Connect and gRPC-Web, a stock grpc-js client, health, auth and metrics.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BuildRequestSchema, BuildState, type BuildResponse, type CancelResponse, type StreamLogsResponse } from "../../src/gen/kiln/v1/builder_pb.js";
import { HealthCheckResponse_ServingStatus as Serving, type HealthCheckResponse } from "../../src/gen/grpc/health/v1/health_pb.js";
import { slowApp } from "../helpers/apps.js";
import { pushBusyboxBase } from "../helpers/base-image.js";
import { makeRepo, type TestRepo } from "../helpers/git-repo.js";
import { BuilderDefinition, grpcClient, HealthDefinition, unary } from "../helpers/grpc-client.js";
import { clientFor, startKilnd, type TestKilnd } from "../helpers/kilnd.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { removeTree, tempDir } from "../helpers/tmp.js";
import { waitFor } from "../helpers/wait.js";

const run = promisify(execFile);
const BUF = new URL("../../node_modules/.bin/buf", import.meta.url).pathname;
const TOKEN = "test-token-0123456789abcdef";

describe("API surface", () => {
  let dir: string, reg: TestRegistry, base: string, kilnd: TestKilnd, repo: TestRepo;
  const tokenFile = () => join(dir, "token");

  before(async () => {
    dir = tempDir("api");
    reg = await startRegistry(join(dir, "registry"));
    base = pushBusyboxBase(reg.host);
    repo = makeRepo(join(dir, "repo"), slowApp(base, 321));
    writeFileSync(tokenFile(), `${TOKEN}\n`);
    kilnd = await startKilnd({ data: join(dir, "data"), registry: reg.host, args: ["--token-file", tokenFile()], token: TOKEN });
  });
  after(async () => {
    await kilnd?.stop();
    await reg?.stop();
    removeTree(dir);
  });

  const bufCurl = async (protocol: string, ...args: string[]) =>
    (await run(BUF, ["curl", "--http2-prior-knowledge", "--protocol", protocol, "-H", `Authorization: Bearer ${TOKEN}`, "--reflect-header", "*", ...args])).stdout;

  for (const protocol of ["grpc", "connect", "grpcweb"]) {
    test(`buf curl lists the services and calls GetInfo by reflection over ${protocol}`, async () => {
      const services = (await bufCurl(protocol, "--list-services", kilnd.addr)).trim().split("\n");
      assert.deepEqual(services.sort(), ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "kiln.v1.BuilderService"]);
      const methods = (await bufCurl(protocol, "--list-methods", kilnd.addr)).trim().split("\n");
      assert.ok(methods.includes("kiln.v1.BuilderService/StreamLogs"));
      const info = JSON.parse(await bufCurl(protocol, "-d", "{}", `${kilnd.addr}/kiln.v1.BuilderService/GetInfo`));
      assert.equal(info.authRequired, true);
      assert.match(info.podmanVersion, /^\d+\.\d+/);
    });
  }

  test("reflection v1alpha answers too", async () => {
    const out = await bufCurl("grpc", "--reflect-protocol", "grpc-v1alpha", "-d", '{"project":"nothing"}', `${kilnd.addr}/kiln.v1.BuilderService/ListBuilds`);
    assert.deepEqual(JSON.parse(out), {});
  });

  test("HTTP/1.1 and HTTP/2 (h2c) on the same port", async () => {
    const h1 = await run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "-X", "POST", "-H", "Content-Type: application/json", "-H", `Authorization: Bearer ${TOKEN}`, "-d", "{}", `${kilnd.addr}/kiln.v1.BuilderService/ListBuilds`]);
    assert.equal(h1.stdout, "1.1 200");
    const h2 = await run("curl", ["-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "-X", "POST", "-H", "Content-Type: application/json", "-H", `Authorization: Bearer ${TOKEN}`, "-d", "{}", `${kilnd.addr}/kiln.v1.BuilderService/ListBuilds`]);
    assert.equal(h2.stdout, "2 200");
  });

  test("a stock grpc-js client builds, follows the log and cancels", async () => {
    const c = grpcClient(BuilderDefinition, kilnd.port);
    const md = new grpc.Metadata();
    md.set("authorization", `Bearer ${TOKEN}`);
    try {
      const req = create(BuildRequestSchema, {
        project: "grpc",
        source: { kind: { case: "git", value: { url: repo.url, commit: repo.head() } } },
        image: `${reg.host}/test/grpc`,
      });
      const res = await unary<BuildResponse>(c, "build", req, md);
      const id = res.build!.id;
      const stream = (c as unknown as { streamLogs(r: unknown, m: grpc.Metadata): grpc.ClientReadableStream<StreamLogsResponse> }).streamLogs({ $typeName: "kiln.v1.StreamLogsRequest", buildId: id, follow: true, afterSeq: 0n }, md);
      let final: StreamLogsResponse | undefined;
      let cancelled: CancelResponse | undefined;
      for await (const m of stream as AsyncIterable<StreamLogsResponse>) {
        if (m.event.case === "line" && m.event.value.text === "before-sleep" && !cancelled) cancelled = await unary<CancelResponse>(c, "cancel", { $typeName: "kiln.v1.CancelRequest", buildId: id }, md);
        if (m.event.case === "build") final = m;
      }
      assert.equal(cancelled?.build?.state, BuildState.CANCELLED);
      assert.equal(final?.event.case === "build" && final.event.value.state, BuildState.CANCELLED);
    } finally {
      c.close();
    }
  });

  test("without the token, or with a wrong one: Unauthenticated; health needs none", async () => {
    for (const token of [undefined, "wrong-token-0123456789abcdef"]) {
      await assert.rejects(clientFor(kilnd.addr, token).listBuilds({}), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
    }
    const h1 = await run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Content-Type: application/json", "-d", "{}", `${kilnd.addr}/kiln.v1.BuilderService/ListBuilds`]);
    assert.equal(h1.stdout, "401");
    await assert.rejects(run(BUF, ["curl", "--http2-prior-knowledge", "--protocol", "grpc", "--list-services", kilnd.addr]), (e: { stderr: string; stdout: string }) => /not authenticated|unauthenticated/i.test(e.stderr + e.stdout));
    const g = grpcClient(HealthDefinition, kilnd.port);
    try {
      const h = await unary<HealthCheckResponse>(g, "check", { $typeName: "grpc.health.v1.HealthCheckRequest", service: "" });
      assert.equal(h.status, Serving.SERVING);
      const s = await unary<HealthCheckResponse>(g, "check", { $typeName: "grpc.health.v1.HealthCheckRequest", service: "kiln.v1.BuilderService" });
      assert.equal(s.status, Serving.SERVING);
      await assert.rejects(unary(g, "check", { $typeName: "grpc.health.v1.HealthCheckRequest", service: "nope" }), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND);
    } finally {
      g.close();
    }
  });

  test("a new token in the token file takes effect without a restart", async () => {
    const next = "rotated-token-abcdef0123456789";
    writeFileSync(tokenFile(), `${next}\n`);
    await waitFor(async () => (await clientFor(kilnd.addr, next).listBuilds({}).then(() => true, () => false)), 10_000, "the new token to be accepted");
    await assert.rejects(clientFor(kilnd.addr, TOKEN).listBuilds({}), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
    writeFileSync(tokenFile(), `${TOKEN}\n`);
    await waitFor(async () => (await clientFor(kilnd.addr, TOKEN).listBuilds({}).then(() => true, () => false)), 10_000, "the old token back");
  });

  test("metrics are served as Prometheus text, to the token's holder", async () => {
    assert.equal((await fetch(`${kilnd.addr}/metrics`)).status, 401);
    assert.equal((await fetch(`${kilnd.addr}/metrics`, { headers: { authorization: "Bearer wrong-token-0123456789abcdef" } })).status, 401);
    const text = await (await fetch(`${kilnd.addr}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    assert.match(text, /^# TYPE kiln_builds_total counter$/m);
    assert.match(text, /^kiln_builds_total\{result="cancelled"\} 1$/m);
    assert.match(text, /^kiln_builds_running 0$/m);
  });

  test("a token file others can read is warned of; --metrics-auth none opens /metrics to anyone, and nothing else", async () => {
    assert.match(kilnd.output(), /the token file .* can be read by others \(mode 644\): chmod 600 it/);
    const open = await startKilnd({ data: join(dir, "open-metrics"), args: ["--token-file", tokenFile(), "--metrics-auth", "none"], token: TOKEN });
    try {
      assert.equal((await fetch(`${open.addr}/metrics`)).status, 200);
      await assert.rejects(clientFor(open.addr).listBuilds({}), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
    } finally {
      await open.stop();
    }
  });

  test("kilnd refuses a non-loopback address without a token", async () => {
    const r = await run(process.execPath, ["--import", "tsx", "src/bin/kilnd.ts", "--listen", "0.0.0.0:0", "--data", join(dir, "other")], { cwd: new URL("../..", import.meta.url).pathname }).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(r.code, 2);
    assert.match(r.stderr, /without --token-file kilnd listens on loopback only/);
  });

  test("on SIGTERM, a health watcher hears NOT_SERVING, HTTP/2 clients get GOAWAY, and kilnd exits 0", async () => {
    const g = grpcClient(HealthDefinition, kilnd.port);
    const watch = (g as unknown as { watch(r: unknown): grpc.ClientReadableStream<HealthCheckResponse> }).watch({ $typeName: "grpc.health.v1.HealthCheckRequest", service: "" });
    const seen: Serving[] = [];
    const ended = new Promise<void>((res) => {
      watch.on("data", (m: HealthCheckResponse) => seen.push(m.status));
      watch.on("error", () => res());
      watch.on("end", () => res());
    });
    await waitFor(() => seen.length > 0, 5000, "the first health status");
    const code = await kilnd.stop();
    await ended;
    g.close();
    assert.equal(code, 0);
    assert.deepEqual(seen, [Serving.SERVING, Serving.NOT_SERVING]);
  });
});

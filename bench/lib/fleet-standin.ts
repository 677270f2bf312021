// The load test's stand-in for 1,000 builder machines, which cannot run here: one HTTP server
// that answers both the Fly Machines API calls the fly driver makes (start, wait: every machine
// starts and stops at once) and kilnd's BuilderService as the scheduler uses it (Build,
// idempotent by request key, one build per project at a time, a newer one supersedes; GetBuild;
// Cancel; StreamLogs with follow; Sleep; CompareCommits from the history the load test says it
// pushed), each build ending SUCCEEDED after buildMs. Every
// functional test uses real kilnd; this exists only to load the scheduler.
import { createServer, type Server } from "node:http";
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Code, ConnectError } from "@connectrpc/connect";
import { BuildSchema, BuildState, BuilderService, CommitRelation, LogLineSchema, LogStream, type Build } from "../../src/gen/kiln/v1/builder_pb.js";
import { timestampFromMs } from "../../src/util/time.js";

export interface BuildCall {
  project: string;
  commit: string;
  key: string;
  at: number;
  /** Whether the call started a build (false: the key was known, the same build answered). */
  started: boolean;
}

export interface FleetStandIn {
  url: string;
  calls: BuildCall[];
  builds: Map<string, Build>;
  /** The branch's history, as git would know it: commit → its project and place on the branch. */
  history: Map<string, { project: string; index: number }>;
  close(): Promise<void>;
}

export async function startFleetStandIn(buildMs: number): Promise<FleetStandIn> {
  const builds = new Map<string, Build>();
  const byKey = new Map<string, Build>();
  const latest = new Map<string, Build>();
  const waiters = new Map<string, Set<() => void>>();
  const calls: BuildCall[] = [];
  const history = new Map<string, { project: string; index: number }>();
  const end = (b: Build, state: BuildState, error = "") => {
    if (b.state !== BuildState.RUNNING) return;
    b.state = state;
    b.error = error;
    b.finishTime = timestampFromMs(Date.now());
    if (state === BuildState.SUCCEEDED) b.imageDigest = `sha256:${randomBytes(32).toString("hex")}`;
    for (const w of waiters.get(b.id) ?? []) w();
    waiters.delete(b.id);
  };
  const ended = (b: Build) => b.state !== BuildState.RUNNING;
  const untilEnded = (b: Build, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      if (ended(b)) return resolve();
      let set = waiters.get(b.id);
      if (!set) waiters.set(b.id, (set = new Set()));
      set.add(resolve);
      signal.addEventListener("abort", () => resolve(), { once: true });
    });

  const handler = connectNodeAdapter({
    routes(router) {
      router.service(BuilderService, {
        build(req) {
          const commit = req.source?.kind.case === "git" ? req.source.kind.value.commit : "";
          const key = `${req.project}/${req.requestKey}`;
          const known = req.requestKey ? byKey.get(key) : undefined;
          calls.push({ project: req.project, commit, key: req.requestKey, at: Date.now(), started: !known });
          if (known) return { build: known };
          const prev = latest.get(req.project);
          if (prev) end(prev, BuildState.CANCELLED, "superseded by a newer build");
          const b = create(BuildSchema, { id: `b${randomBytes(8).toString("hex")}`, project: req.project, commit, state: BuildState.RUNNING, image: `${req.image}:${commit}`, createTime: timestampFromMs(Date.now()), requestKey: req.requestKey });
          builds.set(b.id, b);
          latest.set(req.project, b);
          if (req.requestKey) byKey.set(key, b);
          setTimeout(() => end(b, BuildState.SUCCEEDED), buildMs);
          return { build: b };
        },
        getBuild(req) {
          const b = builds.get(req.buildId);
          if (!b) throw new ConnectError(`no build ${req.buildId}`, Code.NotFound);
          return { build: b };
        },
        cancel(req) {
          const b = builds.get(req.buildId);
          if (!b) throw new ConnectError(`no build ${req.buildId}`, Code.NotFound);
          end(b, BuildState.CANCELLED, "cancelled by request");
          return { build: b };
        },
        async *streamLogs(req, ctx) {
          const b = builds.get(req.buildId);
          if (!b) throw new ConnectError(`no build ${req.buildId}`, Code.NotFound);
          if (req.afterSeq < 1n) yield { event: { case: "line", value: create(LogLineSchema, { seq: 1n, text: `building ${b.commit}`, stream: LogStream.SYSTEM, time: timestampFromMs(Date.now()) }) } };
          if (req.follow) await untilEnded(b, ctx.signal);
          yield { event: { case: "build", value: b } };
        },
        sleep() {
          return {};
        },
        compareCommits(req) {
          const head = history.get(req.source?.commit ?? "");
          const base = history.get(req.base);
          if (!head || !base || head.project !== base.project) throw new ConnectError(`commit not found in ${req.source?.url}`, Code.NotFound);
          const relation = head.index === base.index ? CommitRelation.IDENTICAL : head.index > base.index ? CommitRelation.AHEAD : CommitRelation.BEHIND;
          return { relation };
        },
      });
    },
    fallback(req, res) {
      const url = new URL(req.url ?? "/", "http://x");
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (url.pathname === "/healthz") return send(200, { ok: true });
      // The Machines API: .../machines/{id}/start and .../wait?state=… answer at once.
      if (/^\/v1\/apps\/[^/]+\/machines\/[^/]+\/start$/.test(url.pathname) && req.method === "POST") return send(200, { previous_state: "stopped" });
      if (/^\/v1\/apps\/[^/]+\/machines\/[^/]+\/wait$/.test(url.pathname)) return send(200, { ok: true });
      if (/^\/v1\/apps\/[^/]+\/machines\/[^/]+$/.test(url.pathname)) return send(200, { state: "started" });
      send(404, { error: "not found" });
    },
  });
  const server: Server = createServer(handler);
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    calls,
    builds,
    history,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// kiln.v1.BuilderService: the RPCs a control plane calls, on top of the build engine.
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  BuilderService,
  GetInfoResponseSchema,
  LogLineSchema,
  type LogLine,
} from "../gen/kiln/v1/builder_pb.js";
import type { BuildEngine } from "../builds/engine.js";
import { invalidArgument } from "../errors/kiln-error.js";
import type { LogEntry } from "../logs/build-log.js";
import type { LogStore } from "../logs/log-store.js";
import { BUILD_ID_PATTERN } from "../util/ids.js";
import { timestampFromMs } from "../util/time.js";
import { checkProject, validateBuildRequest } from "../validate/build-request.js";

export interface BuilderServiceDeps {
  engine: BuildEngine;
  logs: LogStore;
  version: string;
  startTime: number;
  authRequired: boolean;
  maxConcurrentBuilds: number;
  podmanVersion(): Promise<string>;
}

function checkBuildId(id: string): string {
  if (!id) throw invalidArgument("build_id", "is required");
  if (!BUILD_ID_PATTERN.test(id)) throw invalidArgument("build_id", `${JSON.stringify(id.slice(0, 80))} is not a build id`);
  return id;
}

const toLogLine = (e: LogEntry): LogLine =>
  create(LogLineSchema, { seq: BigInt(e.seq), time: timestampFromMs(e.time), text: e.text, stream: e.stream, phase: e.phase });

export function createBuilderService(d: BuilderServiceDeps): ServiceImpl<typeof BuilderService> {
  return {
    async build(req) {
      const spec = validateBuildRequest(req);
      return { build: await d.engine.submit(spec) };
    },
    async getBuild(req) {
      return { build: await d.engine.get(checkBuildId(req.buildId)) };
    },
    async listBuilds(req) {
      const project = req.project ? checkProject(req.project) : undefined;
      return { builds: await d.engine.list(project, req.limit) };
    },
    async cancel(req) {
      return { build: await d.engine.cancel(checkBuildId(req.buildId)) };
    },
    async *streamLogs(req, ctx) {
      const id = checkBuildId(req.buildId);
      await d.engine.get(id); // NotFound before anything is streamed
      const after = req.afterSeq > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(req.afterSeq);
      for await (const entry of d.logs.read(id, after, req.follow, ctx.signal)) {
        yield { event: { case: "line", value: toLogLine(entry) } };
      }
      if (ctx.signal.aborted) return;
      yield { event: { case: "build", value: await d.engine.get(id) } };
    },
    async getInfo() {
      return create(GetInfoResponseSchema, {
        version: d.version,
        podmanVersion: await d.podmanVersion(),
        maxConcurrentBuilds: d.maxConcurrentBuilds,
        authRequired: d.authRequired,
        startTime: timestampFromMs(d.startTime),
      });
    },
  };
}

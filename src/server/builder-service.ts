// kiln.v1.BuilderService: the RPCs a control plane calls, on top of the build engine.
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  BuilderService,
  CommitRelation,
  GetInfoResponseSchema,
  GetStorageResponseSchema,
  PruneResponseSchema,
  LogLineSchema,
  type LogLine,
} from "../gen/kiln/v1/builder_pb.js";
import type { BuildEngine } from "../builds/engine.js";
import { invalidArgument, KilnError } from "../errors/kiln-error.js";
import type { StorageContents } from "../storage/disk-usage.js";
import type { VolumeKeeper } from "../storage/volume-keeper.js";
import type { LogEntry } from "../logs/build-log.js";
import type { LogStore } from "../logs/log-store.js";
import { ID_PATTERN } from "../util/ids.js";
import { durationFromMs, timestampFromMs } from "../util/time.js";
import { checkProject, validateBuildRequest, validateCompareRequest, type CompareSpec } from "../validate/build-request.js";
import type { CommitRelation as Relation } from "../git/cache.js";

export interface BuilderServiceDeps {
  dataDir: string;
  engine: BuildEngine;
  logs: LogStore;
  version: string;
  startTime: number;
  authRequired: boolean;
  maxConcurrentBuilds: number;
  podmanVersion(): Promise<string>;
  keeper: VolumeKeeper;
  storage(): Promise<StorageContents>;
  resets(): { count: number; lastMs: number };
  /** Stops kilnd (exit 0) after this call has been answered. */
  sleep(): void;
  /** git/compare.ts */
  compareCommits(spec: CompareSpec, signal: AbortSignal): Promise<Relation>;
}

function checkBuildId(id: string): string {
  if (!id) throw invalidArgument("build_id", "is required");
  if (!ID_PATTERN.test(id)) throw invalidArgument("build_id", `${JSON.stringify(id.slice(0, 80))} is not a build id`);
  return id;
}

const toLogLine = (e: LogEntry): LogLine =>
  create(LogLineSchema, { seq: BigInt(e.seq), time: timestampFromMs(e.time), text: e.text, stream: e.stream, phase: e.phase });

const RELATIONS: Record<Relation, CommitRelation> = {
  identical: CommitRelation.IDENTICAL,
  ahead: CommitRelation.AHEAD,
  behind: CommitRelation.BEHIND,
  diverged: CommitRelation.DIVERGED,
};

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
    async getStorage() {
      const [usage, contents, kilnImages] = await Promise.all([d.keeper.usage(), d.storage(), d.keeper.listImages()]);
      const r = d.resets();
      return create(GetStorageResponseSchema, {
        dataDir: d.dataDir,
        volumeTotalBytes: BigInt(usage.totalBytes),
        volumeFreeBytes: BigInt(usage.freeBytes),
        volumeUsedPercent: usage.usedPercent,
        resetThresholdPercent: d.keeper.resetThresholdPercent,
        overlay: d.keeper.overlay,
        images: contents.images,
        imagesBytes: BigInt(contents.imagesBytes),
        containers: contents.containers,
        kilnImages: kilnImages.length,
        keepBuilds: d.keeper.keepBuilds,
        records: d.engine.recordCount,
        keepRecords: d.engine.keepRecords,
        resets: r.count,
        ...(r.lastMs ? { lastResetTime: timestampFromMs(r.lastMs) } : {}),
      });
    },
    async prune(req) {
      const project = req.project ? checkProject(req.project) : undefined;
      await d.engine.start(); // not while a killed kilnd's leftovers are being cleaned up
      const out = await d.keeper.prune(project, req.dryRun);
      return create(PruneResponseSchema, {
        images: out.images.map((i) => ({
          id: i.id,
          project: i.project,
          buildId: i.build?.id ?? "",
          names: i.names,
          sizeBytes: BigInt(i.sizeBytes),
          createTime: timestampFromMs(i.created * 1000),
        })),
        bytesFreed: BigInt(out.bytesFreed),
        reset: out.reset,
      });
    },
    async resetStorage() {
      await d.engine.start();
      const r = await d.keeper.resetNow("requested by ResetStorage");
      if (!r) throw new KilnError("failed_precondition", "a build is running; reset when none is");
      return { bytesFreed: BigInt(r.bytesFreed), duration: durationFromMs(r.durationMs) };
    },
    async sleep() {
      await d.engine.start();
      if (d.engine.hasPendingWork) throw new KilnError("failed_precondition", "a build is queued or running; kilnd sleeps when it is done");
      // A build that just ended may still be pruning: that is part of its time awake.
      await d.engine.settled();
      // Answer first: the caller should hear yes before the connection goes away.
      setImmediate(() => d.sleep());
      return {};
    },
    async compareCommits(req, ctx) {
      const relation = await d.compareCommits(validateCompareRequest(req), ctx.signal);
      return { relation: RELATIONS[relation] };
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

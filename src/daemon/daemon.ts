// kilnd assembled: storage configuration, build engine, API server, metrics and idle exit.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { ServerResponse } from "node:http";
import type { Http2ServerResponse } from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import type { DaemonOptions } from "../config/options.js";
import { BuildEngine } from "../builds/engine.js";
import { createBaseStore } from "../fastpath/base.js";
import { createFastPath } from "../fastpath/fast-path.js";
import { BLOB_NOTES_DIR, collectBlobNotes } from "../registry/blob-notes.js";
import { MessageStore } from "../store/message-store.js";
import { file_grpc_health_v1_health, Health } from "../gen/grpc/health/v1/health_pb.js";
import { BuilderService, BuildSchema, file_kiln_v1_builder } from "../gen/kiln/v1/builder_pb.js";
import { createGitCache } from "../git/cache.js";
import { createCommitComparer } from "../git/compare.js";
import { LogStore } from "../logs/log-store.js";
import { createPodman, passThroughEnv } from "../podman/podman.js";
import { placeContainerState, writeStorageConfig } from "../podman/storage-config.js";
import { createTokenAuth } from "../server/auth.js";
import { checkBinaryRequests } from "../server/binary-check.js";
import { createBuilderService } from "../server/builder-service.js";
import { errorInterceptor } from "../server/errors.js";
import { createHealthService, createHealthState } from "../server/health-service.js";
import { startServer } from "../server/http-server.js";
import type { Metrics } from "../server/metrics.js";
import { loadExeca } from "../process/execa.js";
import { storageContents } from "../storage/disk-usage.js";
import { VolumeKeeper } from "../storage/volume-keeper.js";
import { registerReflection } from "../server/reflection-service.js";
import { VERSION } from "../version.js";
import { loadSecretDigester } from "../secrets/cache-key.js";
import { createSecretRoot } from "../secrets/secret-dir.js";
import { lockDataDir } from "./data-lock.js";
import { createIdleTracker } from "./idle.js";
import { loadState, saveState } from "./state-file.js";

// gRPC's customary limit for one message.
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const SHUTDOWN_GRACE_MS = 2000;
const AFTER_START_MS = 250;

export type StopReason = "idle" | "sleep" | "signal" | "fatal";

export interface Daemon {
  readonly port: number;
  readonly host: string;
  /** Resolves with the process exit code once the daemon has stopped. */
  readonly stopped: Promise<number>;
  stop(reason: StopReason, detail?: string): Promise<number>;
}

export async function startDaemon(opts: DaemonOptions, logger: Logger): Promise<Daemon> {
  const startTime = Date.now();
  const dir = (name: string) => join(opts.dataDir, name);
  await mkdir(opts.dataDir, { recursive: true });
  // Before anything touches the volume: a second kilnd on it stops here.
  const lock = await lockDataDir(opts.dataDir);
  await Promise.all(["builds", "logs", "git", "work", "tmp"].map((d) => mkdir(dir(d), { recursive: true })));
  const layout = await writeStorageConfig({
    dataDir: opts.dataDir,
    insecureRegistries: opts.insecureRegistries,
    ...(opts.overlayMountProgram ? { overlayMountProgram: opts.overlayMountProgram } : {}),
  });
  await placeContainerState(layout);
  const podman = createPodman({ layout, baseEnv: passThroughEnv(process.env) });
  const secrets = {
    root: createSecretRoot(layout.secretsRoot),
    ...(opts.registryAuthFile ? { authFile: opts.registryAuthFile } : { authFile: undefined }),
    digest: await loadSecretDigester(join(opts.dataDir, "keys", "secret-cache.key")),
    env: podman.env(),
  };
  const records = new MessageStore(BuildSchema, dir("builds"));
  const logs = new LogStore(dir("logs"));
  const statePath = join(opts.dataDir, "kilnd-state.json");
  const state = await loadState(statePath);
  // prom-client is loaded once kilnd answers (start-up time is wake time); whatever happens
  // before that is counted once it is there.
  let resolveMetrics!: (m: Metrics) => void;
  const metricsReady = new Promise<Metrics>((r) => (resolveMetrics = r));
  // The keeper and the engine refer to each other; the keeper only calls back after start.
  let engine: BuildEngine;
  const bases = createBaseStore(dir("fastpath"));
  const keeper = new VolumeKeeper({
    dataDir: opts.dataDir,
    tmpRoot: dir("tmp"),
    snapshotsDir: bases.snapshotsDir,
    layout,
    env: () => podman.env(),
    keepBuilds: opts.keepBuilds,
    resetThresholdPercent: opts.resetThresholdPercent,
    logger,
    imageBuilds: (project) => engine.imageBuilds(project),
    baseImages: (project) => bases.parentImages(project),
    runningBuilds: () => engine.runningCount,
    liveTmpDirs: () => engine.liveTmpDirs(),
    onReset(durationMs, bytes) {
      state.resets++;
      state.lastResetMs = Date.now();
      void saveState(statePath, state).catch((err) => logger.error({ err }, "cannot save kilnd-state.json"));
      void metricsReady.then((m) => m.reset(durationMs, bytes));
    },
    onPrune: (n, bytes) => void metricsReady.then((m) => m.pruned(n, bytes)),
    releaseMounts: () => podman.unmountIdleImages(),
    collectUnused: async () => {
      const [baseLayers, blobNotes] = await Promise.all([podman.baseLayers.collect(), collectBlobNotes(join(layout.graphRoot, BLOB_NOTES_DIR), layout.graphRoot)]);
      return { baseLayers, blobNotes };
    },
    spreadDirs: [layout.baseLayerDir, join(layout.graphRoot, "overlay"), layout.cacheMountDir, dir("tmp"), dir("work")],
  });
  const fastPath = opts.fastPath ? createFastPath({ bases, insecureRegistries: new Set(opts.insecureRegistries), podman, buildNetwork: opts.buildNetwork, cacheDir: podman.layout.cacheMountDir }) : undefined;
  const gitCache = createGitCache(dir("git"), dir("work"));
  engine = new BuildEngine({
    dataDir: opts.dataDir,
    maxConcurrentBuilds: opts.maxConcurrentBuilds,
    buildNetwork: opts.buildNetwork,
    buildEngine: opts.buildEngine,
    imageFormat: opts.imageFormat,
    insecureRegistries: opts.insecureRegistries,
    pushTimeoutSec: opts.pushTimeoutSec,
    pushEngine: opts.pushEngine,
    keepRecords: opts.keepRecords,
    records,
    logs,
    git: gitCache,
    podman,
    secrets,
    ...(fastPath ? { fastPath } : {}),
    logger,
    onFinished: (b) => void metricsReady.then((m) => m.buildFinished(b)),
    housekeeping: {
      beforeBuild: () => keeper.beforeBuild(),
      afterBuild: async (project, build) => void (await (build.fastPath ? keeper.afterFastBuild() : keeper.prune(project, false))),
      onNoSpace: () => keeper.onNoSpace(),
    },
  });
  const metricsOptions = {
    running: () => engine.runningCount,
    queued: () => engine.queuedCount,
    settling: () => engine.settlingCount,
    logSubscribers: () => logs.activeReaders,
    volume: () => keeper.usage(),
    overlay: () => keeper.overlay,
    persisted: { resets: state.resets, idleExits: state.idleExits },
  };
  // The records are loaded and a killed kilnd's leftovers cleaned up while kilnd already answers:
  // every RPC that reads builds or changes storage waits for it, and GetInfo (a woken machine's
  // first call) does not.
  const recovery = engine.start().then(
    () => undefined,
    (err: unknown) => err ?? new Error("start-up recovery failed"),
  );

  const auth = opts.tokenFile ? createTokenAuth(opts.tokenFile, logger) : undefined;
  const health = createHealthState();
  const shutdown = new AbortController();
  let stopping: Promise<number> | undefined;
  let resolveStopped!: (code: number) => void;
  const stopped = new Promise<number>((r) => (resolveStopped = r));

  const idle = createIdleTracker({
    timeoutMs: opts.idleTimeoutSec * 1000,
    busy: () => engine.activeCount > 0 || engine.settlingCount > 0,
    onIdle: () => void daemon.stop("idle", `no build, RPC or log stream for ${opts.idleTimeoutSec} s`),
  });

  const handler = connectNodeAdapter({
    routes(router) {
      router.service(BuilderService, createBuilderService({
        dataDir: opts.dataDir,
        engine,
        logs,
        version: VERSION,
        startTime,
        authRequired: auth !== undefined,
        maxConcurrentBuilds: opts.maxConcurrentBuilds,
        podmanVersion: () => podman.version(),
        keeper,
        storage: () => storageContents(podman.env()),
        resets: () => ({ count: state.resets, lastMs: state.lastResetMs }),
        sleep: () => void daemon.stop("sleep", "asked to sleep by the Sleep RPC"),
        compareCommits: createCommitComparer(gitCache, () => podman.env()),
      }));
      router.service(Health, createHealthService(health, [BuilderService.typeName]));
      registerReflection(router, [file_kiln_v1_builder, file_grpc_health_v1_health], [BuilderService.typeName, Health.typeName]);
      checkBinaryRequests(router, MAX_MESSAGE_BYTES);
    },
    // Errors converted once, outermost; then auth: a refused call is no activity and never reaches a service.
    interceptors: [errorInterceptor(logger), ...(auth ? [auth.interceptor] : []), idle.interceptor],
    readMaxBytes: MAX_MESSAGE_BYTES,
    writeMaxBytes: MAX_MESSAGE_BYTES,
    shutdownSignal: shutdown.signal,
    fallback(req, res) {
      const path = (req.url ?? "/").split("?")[0];
      const reply = (code: number, type: string, body: string) => {
        (res as ServerResponse | Http2ServerResponse).writeHead(code, { "content-type": type });
        res.end(body);
      };
      if (req.method === "GET" && path === "/metrics") {
        if (auth && opts.metricsAuth === "token" && !auth.allows(req.headers.authorization)) {
          return reply(401, "text/plain", "missing or wrong bearer token (kilnd --metrics-auth none lets anyone on the network scrape)\n");
        }
        void metricsReady
          .then(async (m) => reply(200, m.registry.contentType, await m.registry.metrics()))
          .catch(() => reply(500, "text/plain", "metrics failed\n"));
      } else if (req.method === "GET" && path === "/healthz") {
        reply(stopping ? 503 : 200, "text/plain", stopping ? "stopping\n" : "ok\n");
      } else {
        reply(404, "text/plain", "not found\n");
      }
    },
  });

  const server = await startServer({ host: opts.listenHost, port: opts.listenPort, handler });
  lock.serving(`${server.address.host}:${server.address.port}`);
  logger.info({ listen: `${server.address.host}:${server.address.port}`, data: opts.dataDir, runroot: layout.runRoot, auth: auth !== undefined, idleTimeout: opts.idleTimeoutSec, startupMs: Date.now() - startTime, version: VERSION }, "kilnd serving");
  // What the first RPCs do not need is loaded a moment after kilnd answers, so that loading it
  // does not hold the event loop while a woken machine's first calls come in. A build that comes
  // first loads what it needs itself.
  setTimeout(() => {
    void import("../server/metrics.js").then(
      (m) => resolveMetrics(m.createMetrics(metricsOptions)),
      (err) => logger.error({ err }, "metrics cannot be loaded: /metrics will not answer"),
    );
    void loadExeca();
    void fastPath?.preload();
    // Every build reads its Containerfile's FROM lines and secret mounts with the parser.
    void import("../images/resolve.js");
    void import("../secrets/secret-mounts.js");
    // podman info takes a quarter of a second.
    void podman.version().then((v) => {
      if (v === "unknown") logger.error("podman does not answer: builds will fail until it is installed (scripts/setup.sh)");
      else void keeper.checkOverlay();
    });
  }, AFTER_START_MS).unref();

  const daemon: Daemon = {
    port: server.address.port,
    host: server.address.host,
    stopped,
    stop(reason, detail) {
      stopping ??= (async () => {
        logger.info({ reason, detail }, "kilnd stopping");
        health.setNotServing();
        idle.stop();
        await engine.shutdown(reason === "idle" || reason === "sleep" ? "kilnd went to sleep" : "kilnd stopped");
        await podman.unmountIdleImages().catch((err) => logger.warn({ err }, "cannot unmount the fast path's images"));
        shutdown.abort();
        await server.close(SHUTDOWN_GRACE_MS);
        await auth?.close();
        await lock.release();
        if (reason === "idle" || reason === "sleep") {
          state.idleExits++;
          await saveState(statePath, state).catch((err) => logger.error({ err }, "cannot save kilnd-state.json"));
        }
        const code = reason === "fatal" ? 1 : 0;
        logger.info({ reason, code }, reason === "idle" || reason === "sleep" ? `kilnd exiting: ${reason}` : "kilnd stopped");
        resolveStopped(code);
        return code;
      })();
      return stopping;
    },
  };
  void recovery.then((err) => {
    if (err === undefined) return;
    logger.fatal({ err }, "cannot load the build records or clean up after the last run");
    void daemon.stop("fatal", "start-up recovery failed");
  });
  return daemon;
}

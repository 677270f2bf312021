// The build engine: accepts builds, keeps one build per project (a newer one supersedes the
// running one), bounds how many run at once, cancels, and recovers after a restart.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { clone, create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import { BuildSchema, BuildState, Phase, PhaseDurationsSchema, type Build } from "../gen/kiln/v1/builder_pb.js";
import { KilnError } from "../errors/kiln-error.js";
import type { FastPath } from "../fastpath/fast-path.js";
import type { GitCache } from "../git/cache.js";
import type { LogStore } from "../logs/log-store.js";
import { SECRET_LIKE_ARG, type BuildEngineName } from "../podman/build-command.js";
import type { Podman } from "../podman/podman.js";
import { newId } from "../util/ids.js";
import { msFromDuration, msFromTimestamp, timestampFromMs } from "../util/time.js";
import type { BuildSpec } from "../validate/build-request.js";
import { ActiveBuild, StopSignal, type StopRequest } from "./active-build.js";
import { createMasker } from "../secrets/masker.js";
import type { BuildSecretsDeps } from "../secrets/build-secrets.js";
import { runPipeline } from "./pipeline.js";
import { killBuildProcesses, recoverInterrupted } from "./stop.js";
import type { MessageStore } from "../store/message-store.js";
import { createSlots } from "../util/slots.js";

export interface EngineOptions {
  dataDir: string;
  maxConcurrentBuilds: number;
  buildNetwork: string;
  buildEngine: BuildEngineName;
  imageFormat: "docker" | "oci";
  insecureRegistries: readonly string[];
  /** A push's deadline before its bytes are counted in. */
  pushTimeoutSec: number;
  /** What pushes a full build (builds/push.ts). */
  pushEngine: "kiln" | "podman";
  /** Finished records (and logs) kept per project; older ones go as builds end. */
  keepRecords: number;
  records: MessageStore<typeof BuildSchema>;
  logs: LogStore;
  git: GitCache;
  podman: Podman;
  /** Secrets and registry credentials: their tmpfs root, kilnd's auth file, the cache digest. */
  secrets: BuildSecretsDeps;
  /** kiln's fast path; absent when kilnd runs with --fast-path off. */
  fastPath?: FastPath;
  logger: Logger;
  /** Told when a build ends (metrics). */
  onFinished?: (b: Build) => void;
  housekeeping?: Housekeeping;
  /** The engine's collaborators that touch git, podman and the volume; replaced in unit tests. */
  seams?: Partial<EngineSeams>;
}

export interface EngineSeams {
  /** Runs one build: fetch, slot, build, push (pipeline.ts). Resolves a.accepted once fetched. */
  pipeline: typeof runPipeline;
  /** Start-up recovery after a killed kilnd (stop.ts). */
  recover: () => Promise<void>;
  /** Ends a build's processes; true when podman was running (stop.ts). */
  kill: (a: ActiveBuild) => Promise<boolean>;
}

/** Volume care around builds (storage/volume-keeper.ts). */
export interface Housekeeping {
  /** Before podman starts (the build holds its slot): true if storage was reset. */
  beforeBuild(): Promise<boolean>;
  /**
   * After a successful build of the project: prune what the keep policy drops. A fast-path build
   * added no image to storage, so there is nothing new to prune: only the volume's use is checked.
   */
  afterBuild(project: string, build: { fastPath: boolean }): Promise<void>;
  /** podman ran out of space: true if storage was reset and the build may try again. */
  onNoSpace(): Promise<boolean>;
}

const TERMINAL = new Set([BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED]);
export const isTerminal = (s: BuildState) => TERMINAL.has(s);

export class BuildEngine {
  private readonly active = new Map<string, ActiveBuild>();
  /** Builds whose result is out and whose work after it (the next builds' base, records, the prune) still runs. */
  private readonly settling = new Set<ActiveBuild>();
  /** The newest build of each project, while it is alive. */
  private readonly latest = new Map<string, ActiveBuild>();
  private readonly slots;
  private readonly tmpRoot: string;
  private readonly insecure: ReadonlySet<string>;
  private sweepPending = false;
  private ready: Promise<void> | undefined;
  private closing = false;

  private readonly seams: EngineSeams;

  constructor(private readonly o: EngineOptions) {
    this.slots = createSlots(o.maxConcurrentBuilds);
    this.tmpRoot = join(o.dataDir, "tmp");
    this.insecure = new Set(o.insecureRegistries);
    this.seams = {
      pipeline: runPipeline,
      recover: () => recoverInterrupted({ records: o.records, podman: o.podman, secretRoot: o.secrets.root, tmpRoot: this.tmpRoot, logger: o.logger }),
      kill: (a) => killBuildProcesses(a, o.podman),
      ...o.seams,
    };
  }

  /** Loads the records and repairs what a killed kilnd left behind. Builds wait for it. */
  start(): Promise<void> {
    this.ready ??= this.seams.recover();
    return this.ready;
  }

  get runningCount(): number {
    return this.slots.running;
  }

  get queuedCount(): number {
    return [...this.active.values()].filter((a) => a.record.state === BuildState.QUEUED).length;
  }

  get activeCount(): number {
    return this.active.size;
  }

  /** Builds whose result is out and whose work after it still runs (kiln_builds_settling). */
  get settlingCount(): number {
    return this.settling.size;
  }

  /** True while a build is queued or running (finished builds may still be housekeeping). */
  get hasPendingWork(): boolean {
    return [...this.active.values()].some((a) => !isTerminal(a.record.state));
  }

  /** Resolves once every live build is done, housekeeping included. */
  async settled(): Promise<void> {
    // A build leaves `active` before its prune: the settling ones are waited for too.
    while (this.active.size > 0 || this.settling.size > 0) await Promise.all([...this.active.values(), ...this.settling].map((a) => a.done.promise));
  }

  /** Names of the temp dirs of live builds (under <data>/tmp). */
  liveTmpDirs(): Set<string> {
    return new Set(this.active.keys());
  }

  async get(id: string): Promise<Build> {
    await this.start();
    const live = this.active.get(id);
    if (live) return snapshot(live);
    const b = this.o.records.get(id);
    if (!b) throw new KilnError("not_found", `build_id: no build ${JSON.stringify(id)}`);
    return b;
  }

  async list(project: string | undefined, limit: number): Promise<Build[]> {
    await this.start();
    return this.o.records.list(project, limit).map((b) => {
      const live = this.active.get(b.id);
      return live ? snapshot(live) : b;
    });
  }

  /**
   * The newest successful build that gave each image (by full image ID), and when it ended: a
   * commit built again gives the image it gave before, and the prune keeps what was built last.
   */
  imageBuilds(project?: string): Map<string, { id: string; ms: number }> {
    const out = new Map<string, { id: string; ms: number }>();
    for (const b of this.o.records.list(project)) {
      if (b.state !== BuildState.SUCCEEDED || !b.imageId || out.has(b.imageId)) continue;
      out.set(b.imageId, { id: b.id, ms: msFromTimestamp(b.finishTime) ?? msFromTimestamp(b.createTime) ?? 0 });
    }
    return out;
  }

  /** Accepts a build; resolves once its commit is in the cache (or rejects, the build FAILED). */
  async submit(spec: BuildSpec): Promise<Build> {
    await this.start();
    if (this.closing) throw new KilnError("unavailable", "kilnd is shutting down");
    // Checked and recorded with no await between: two calls with one key make one build.
    const earlier = spec.requestKey ? this.byRequestKey(spec.project, spec.requestKey) : undefined;
    if (earlier) {
      if (earlier.commit !== spec.commit) throw new KilnError("already_exists", `request_key: ${spec.requestKey} was used for build ${earlier.id} of commit ${earlier.commit}`);
      this.o.logger.info({ build: earlier.id, project: spec.project, key: spec.requestKey }, "build asked for again with its request key: the same build");
      return earlier;
    }
    const now = Date.now();
    const record = create(BuildSchema, {
      id: newId(now),
      project: spec.project,
      state: BuildState.QUEUED,
      phase: Phase.FETCH,
      commit: spec.commit,
      image: `${spec.image.repository}:${spec.commit}`,
      createTime: timestampFromMs(now),
      durations: create(PhaseDurationsSchema),
      sourceUrl: spec.git.redacted,
      containerfile: spec.containerfile ?? "",
      context: spec.context,
      target: spec.target ?? "",
      requestKey: spec.requestKey ?? "",
    });
    const secretArgs = Object.entries(spec.buildArgs).filter(([k]) => SECRET_LIKE_ARG.test(k)).map(([, v]) => v);
    const masker = createMasker([...spec.git.secrets, ...Object.values(spec.secrets), ...spec.registryCredentials.map((c) => c.password), ...secretArgs]);
    const a = new ActiveBuild(record, spec, this.o.logs.open(record.id, (t) => masker.mask(t)), join(this.tmpRoot, record.id), masker);
    const previous = this.latest.get(spec.project);
    this.active.set(a.id, a);
    this.latest.set(spec.project, a);
    await this.o.records.save(record);
    this.o.logger.info({ build: a.id, project: spec.project, commit: spec.commit }, "build accepted");
    a.say(`accepted: ${spec.project} ${spec.commit} -> ${record.image}`);
    // A previous build past its result is not stopped: this one waits for what follows it.
    if (previous && !isTerminal(previous.record.state)) void this.stop(previous, { reason: `superseded by ${a.id}`, asFailure: false });
    void this.drive(a, previous);
    await a.accepted.promise;
    return snapshot(a);
  }

  /** The project's build asked for with this key, live or recorded. */
  private byRequestKey(project: string, key: string): Build | undefined {
    for (const a of this.active.values()) if (a.record.project === project && a.record.requestKey === key) return snapshot(a);
    return this.o.records.list(project).find((b) => b.requestKey === key);
  }

  /** Stops a live build and returns its final record; a finished build is returned unchanged. */
  async cancel(id: string, reason = "cancelled by request"): Promise<Build> {
    await this.start();
    const a = this.active.get(id);
    if (!a || isTerminal(a.record.state)) return this.get(id);
    await this.stop(a, { reason, asFailure: false });
    return this.get(id);
  }

  /** Stops every live build (they end FAILED, "interrupted") and waits for the records. */
  async shutdown(reason: string): Promise<void> {
    this.closing = true;
    // kilnd answers while start-up recovery runs: let it finish, its records included.
    await this.ready?.catch(() => undefined);
    await Promise.all([...this.active.values()].map((a) => this.stop(a, { reason: `interrupted: ${reason}`, asFailure: true })));
    // Builds past their result have nothing to stop; their work after it (the prune) ends first.
    await this.settled();
    await this.o.records.flush();
  }

  private async stop(a: ActiveBuild, req: StopRequest): Promise<void> {
    // Past its result, a build has nothing left to stop: a shutdown (the Sleep RPC right after a
    // build's result included) waits for the work after it, or the next build would find no base.
    if (!a.stop && !isTerminal(a.record.state)) {
      a.stop = req;
      a.abort.abort(new StopSignal(req.reason));
      a.say(`stopping: ${req.reason}`);
      a.killed = this.seams.kill(a).then(
        (podmanStopped) => void (podmanStopped && (this.sweepPending = true)),
        (err) => this.o.logger.error({ err, build: a.id }, "cannot stop the build's processes"),
      );
    }
    await a.done.promise;
  }

  private async drive(a: ActiveBuild, previous: ActiveBuild | undefined): Promise<void> {
    const rec = a.record;
    try {
      // One build per project: the superseded one must be gone before this one touches the
      // project's git cache and checkout.
      if (previous) await raceAbort(previous.done.promise, a.abort.signal);
      await this.seams.pipeline(a, {
        git: this.o.git,
        podman: this.o.podman,
        ...(this.o.fastPath ? { fastPath: this.o.fastPath } : {}),
        slots: this.slots,
        buildNetwork: this.o.buildNetwork,
        buildEngine: this.o.buildEngine,
        imageFormat: this.o.imageFormat,
        insecureRegistries: this.insecure,
        pushTimeoutSec: this.o.pushTimeoutSec,
        pushEngine: this.o.pushEngine,
        secrets: this.o.secrets,
        save: (x) => this.o.records.save(x.record),
        beforeBuild: async () => {
          await this.sweepIfIdle(1);
          if (await this.o.housekeeping?.beforeBuild()) a.say("storage: the volume was over the reset threshold; container storage was reset, this build is a cold one");
        },
        onNoSpace: async () => (await this.o.housekeeping?.onNoSpace()) ?? false,
      });
      a.finish(BuildState.SUCCEEDED, "");
      a.say(`succeeded in ${msFromDuration(rec.durations?.total)} ms`);
    } catch (e) {
      if (a.stop) {
        a.finish(a.stop.asFailure ? BuildState.FAILED : BuildState.CANCELLED, a.stop.reason);
      } else {
        // A failed buildah can leave its working container (and its mount) behind.
        this.sweepPending = true;
        if (e instanceof KilnError) {
          const error = a.masker.mask(e.message);
          a.finish(BuildState.FAILED, error);
          a.accepted.reject(error === e.message ? e : new KilnError(e.code, error));
        } else {
          const err = e instanceof Error ? { type: e.name, message: a.masker.mask(e.message), stack: a.masker.mask(e.stack ?? "") } : a.masker.mask(String(e));
          this.o.logger.error({ err, build: a.id }, "build failed on an internal error");
          a.finish(BuildState.FAILED, "internal error (see kilnd's log)");
          a.accepted.reject(new KilnError("internal", rec.error));
        }
      }
      a.say(`${BuildState[rec.state]!.toLowerCase()}: ${rec.error}`);
    } finally {
      a.accepted.resolve();
      // What a stopped or failed build left (its processes, a working container) is gone before
      // the log closes: a reader of the final record finds nothing of it left.
      await a.killed;
      await this.sweepIfIdle(0);
      await this.o.records.save(rec).catch((err) => this.o.logger.error({ err, build: a.id }, "cannot save build record"));
      await this.o.logs.finish(a.id);
      this.settling.add(a);
      try {
        // The result is out (the log's followers have the final record); what follows it runs now.
        if (a.afterward && rec.state === BuildState.SUCCEEDED) {
          const said = await a.afterward().catch((err: unknown) => void this.o.logger.error({ err, build: a.id }, "the work after the build failed"));
          if (said) this.o.logger.info({ build: a.id, project: rec.project }, a.masker.mask(said));
        }
        await rm(a.tmpDir, { recursive: true, force: true }).catch(() => {});
        this.active.delete(a.id);
        await this.trimRecords(rec.project);
        if (this.latest.get(rec.project) === a) this.latest.delete(rec.project);
        this.o.logger.info({ build: a.id, project: rec.project, state: BuildState[rec.state], error: rec.error || undefined }, "build finished");
        this.o.onFinished?.(rec);
        // Housekeeping belongs to the build's time awake: kilnd does not idle out before it ends.
        if (rec.state === BuildState.SUCCEEDED && this.o.housekeeping) {
          await this.o.housekeeping.afterBuild(rec.project, { fastPath: rec.fastPath }).catch((err) => this.o.logger.error({ err, project: rec.project }, "the housekeeping after the build failed"));
        }
        // The chain stays whole: done means this build and all it superseded are gone.
        if (previous) await previous.done.promise;
      } finally {
        this.settling.delete(a);
      }
      a.done.resolve();
    }
  }

  /** The volume keeps the project's newest keepRecords finished records and their logs. */
  private async trimRecords(project: string): Promise<void> {
    try {
      for (const id of await this.o.records.trim(project, this.o.keepRecords, (b) => isTerminal(b.state) && !this.active.has(b.id))) await this.o.logs.remove(id);
    } catch (err) {
      this.o.logger.error({ err, project }, "cannot remove old build records");
    }
  }

  get keepRecords(): number {
    return this.o.keepRecords;
  }

  get recordCount(): number {
    return this.o.records.size;
  }

  /** Removes leftover working containers once no other build could be using one. */
  private async sweepIfIdle(own: number): Promise<void> {
    if (!this.sweepPending || this.slots.running > own) return;
    this.sweepPending = false;
    await this.o.podman.removeWorkingContainers();
  }
}

function snapshot(a: ActiveBuild): Build {
  return clone(BuildSchema, a.record);
}


function raceAbort(p: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((res, rej) => {
    const onAbort = () => rej(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      () => {
        signal.removeEventListener("abort", onAbort);
        res();
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        rej(e);
      },
    );
  });
}

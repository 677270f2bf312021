// One project's queue and its one worker. The newest commit wins: a commit that arrives while
// another waits replaces it (the older one is SUPERSEDED), and one that arrives during a build
// has that build cancelled. The worker wakes the machine, has kilnd build, follows the log, and
// when the queue is empty puts the machine to sleep at once. A wake that fails, or kilnd going
// away mid-build, is retried with backoff (bounded); a build interrupted that way is run again
// once. A build that fails on its own merits is not retried.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { kilndClient, tokenFile, type KilndClient } from "../client/kilnd.js";
import { BuildState, CommitRelation, type Build } from "../gen/kiln/v1/builder_pb.js";
import { DeploymentState, type Deployment } from "../gen/kiln/v1/scheduler_pb.js";
import { durationFromMs, msFromTimestamp, timestampFromMs } from "../util/time.js";
import type { ProjectConfig } from "./config.js";
import type { DeploymentEvents } from "./deployment-events.js";
export { isFinal } from "./deployment-events.js";
import { isPermanentWakeError, type MachineDriver } from "./drivers/driver.js";
import { createProjectSecrets, type ProjectSecrets } from "./project-secrets.js";

type Kilnd = KilndClient;

const WAKE_ATTEMPTS = 5;
const RECONNECT_ATTEMPTS = 6;
const INTERRUPTED_RETRIES = 1;
const ASLEEP_TIMEOUT_MS = 60_000;

export interface WorkerDeps {
  project: ProjectConfig;
  driver: MachineDriver;
  save(d: Deployment): Promise<void>;
  /** An unordered push was found newer than the branch's head (store.advanceHead). */
  advanceHead(commit: string): Promise<void>;
  events: DeploymentEvents;
  logger: Logger;
  backoffMs?: number;
  /** The queue is empty and the machine asleep (the worker's loop has ended). */
  onIdle?: () => void;
  /** The project's credentials (the scheduler keeps one per project, so a minted token outlives a worker). */
  secrets?: (p: ProjectConfig) => ProjectSecrets;
  /** kilnd's API at a machine's URL: the real client, or a stand-in in unit tests. */
  connect?: (url: string) => Kilnd;
}

/** kilnd went away (connection refused or reset, stream cut): worth waking again. */
function isGone(e: unknown): boolean {
  if (!(e instanceof ConnectError)) return true;
  return e.code === Code.Unavailable || e.code === Code.Unknown || e.code === Code.Aborted || e.code === Code.Internal && /ECONNRESET|socket hang up|EPIPE/.test(e.message);
}

export class ProjectWorker {
  private pending: Deployment | undefined;
  /** Pushes waiting for git to order them against the newest push (between deployments). */
  private readonly unordered: Deployment[] = [];
  /** The newest push placed in the queue: what an unordered push is compared with. */
  private newestPush: Deployment | undefined;
  /** orderAlongside at work. */
  private ordering: Promise<void> | undefined;
  private current: Deployment | undefined;
  private running = false;
  /** Deployments that ended since the machine last woke: they learn when it sleeps again. */
  private awakeFor: Deployment[] = [];
  private kilnd: { url: string; client: Kilnd } | undefined;
  private idleDone: Promise<void> = Promise.resolve();
  /** The scheduler is stopping: records stay as they are, for the next run to resume. */
  private stopped = false;

  private secrets: ProjectSecrets;
  private project: ProjectConfig;
  /** Ends the worker's calls to kilnd when it stops. */
  private readonly abort = new AbortController();

  constructor(private readonly d: WorkerDeps) {
    this.project = d.project;
    this.secrets = (d.secrets ?? createProjectSecrets)(d.project);
  }

  /** The project's settings changed: the next build asks for them (the machine stays). */
  setProject(p: ProjectConfig): void {
    if (JSON.stringify(p) === JSON.stringify(this.project)) return;
    this.project = p;
    this.secrets = (this.d.secrets ?? createProjectSecrets)(p);
  }

  /** Stops where it is, writing nothing more: the records stay for whoever drives the queue next. */
  stop(): void {
    this.stopped = true;
    this.pending = undefined;
    this.unordered.length = 0;
    this.abort.abort();
  }

  /** Stops, and cancels the build it drives on kilnd (the project is gone). */
  async abandon(reason: string): Promise<void> {
    const cur = this.current;
    const kilnd = this.kilnd;
    this.stop();
    if (cur?.buildId && kilnd) await kilnd.client.cancel({ buildId: cur.buildId }).catch((err) => this.d.logger.warn({ err, build: cur.buildId, reason }, "cannot cancel the build"));
  }

  /**
   * Queues a deployment; the newest one wins. A push the store could not order against the
   * branch's head waits for git's word (orderPush) before it supersedes anything.
   */
  submit(dep: Deployment): void {
    if (dep.orderCheck?.commit && dep.trigger === "webhook") {
      this.unordered.push(dep);
      this.orderAlongside();
    } else this.place(dep);
    if (!this.running) void this.loop();
  }

  /**
   * While a build runs its machine is awake: unordered pushes are put in order at once on its
   * kilnd (a newer one then cancels the build). Otherwise the loop orders them, waking the machine.
   */
  private orderAlongside(): void {
    if (this.ordering || !this.running) return;
    this.ordering = (async () => {
      for (;;) {
        const kilnd = this.kilnd?.client;
        if (this.stopped || !kilnd || this.current?.state !== DeploymentState.BUILDING) return;
        const next = this.unordered.shift();
        if (!next) return;
        const outcome = await this.orderPush(next, kilnd).catch((err) => {
          if (!this.stopped) return this.finish(next, DeploymentState.FAILED, `internal error: ${(err as Error).message}`);
        });
        if (outcome === "later") return;
      }
    })().finally(() => (this.ordering = undefined));
  }

  private place(dep: Deployment): void {
    if (this.pending) void this.supersede(this.pending, dep.id);
    this.pending = dep;
    if (dep.trigger === "webhook") this.newestPush = dep;
    const cur = this.current;
    if (cur && cur.state === DeploymentState.BUILDING && cur.buildId) this.cancelFor(cur, dep);
  }

  /** Cancels the deployment's build on kilnd: by is the deployment that supersedes it. */
  private cancelFor(cur: Deployment, by: Deployment): void {
    if (!this.kilnd) return;
    cur.supersededBy = by.id;
    void this.kilnd.client.cancel({ buildId: cur.buildId }).catch((err) => this.d.logger.warn({ err, build: cur.buildId }, "cannot cancel the superseded build"));
  }

  /** Resolves once the worker has nothing to do and the machine is asleep (tests, shutdown). */
  idle(): Promise<void> {
    return this.idleDone;
  }

  private async loop(): Promise<void> {
    this.running = true;
    let finished!: () => void;
    this.idleDone = new Promise((r) => (finished = r));
    try {
      while (this.pending || this.unordered.length || this.ordering) {
        if (this.ordering) {
          await this.ordering;
          continue;
        }
        const next = this.unordered.shift();
        if (next) {
          await this.orderPush(next).catch((err) => {
            if (!this.stopped) return this.finish(next, DeploymentState.FAILED, `internal error: ${(err as Error).message}`);
          });
          continue;
        }
        const dep = this.pending!;
        this.pending = undefined;
        this.current = dep;
        await this.deploy(dep).catch((err) => {
          if (!this.stopped) return this.finish(dep, DeploymentState.FAILED, `internal error: ${(err as Error).message}`);
        });
        this.current = undefined;
      }
      if (!this.stopped) await this.sleepMachine();
    } finally {
      this.running = false;
      finished();
      if (this.pending && !this.stopped) void this.loop();
      else if (!this.stopped) this.d.onIdle?.();
    }
  }

  private async deploy(dep: Deployment): Promise<void> {
    let interruptions = 0;
    for (;;) {
      await this.update(dep, { state: DeploymentState.WAKING });
      const kilnd = await this.wake(dep);
      if (!kilnd) return;
      if (this.pending) return this.finish(dep, DeploymentState.SUPERSEDED, `superseded by ${this.pending.id}`, this.pending.id);

      let build: Build | undefined;
      if (dep.buildId) {
        // Resuming (a scheduler restart): kilnd may know the build already.
        build = await kilnd.getBuild({ buildId: dep.buildId }).then(
          (r) => r.build,
          () => undefined,
        );
      }
      if (!build) {
        let request;
        try {
          request = await this.buildRequest(dep);
        } catch (e) {
          // A secret file that cannot be read or a token GitHub would not mint: the build cannot start.
          return this.finish(dep, DeploymentState.FAILED, (e as Error).message);
        }
        try {
          build = (await kilnd.build(request, { signal: this.abort.signal })).build!;
        } catch (e) {
          if (isGone(e) && interruptions++ < RECONNECT_ATTEMPTS) {
            this.kilnd = undefined;
            await this.backoff(interruptions);
            continue;
          }
          return this.finish(dep, DeploymentState.FAILED, `kilnd refused the build: ${e instanceof ConnectError ? e.rawMessage : String(e)}`);
        }
        dep.attempts++;
        dep.times!.buildStarted = build.createTime ?? timestampFromMs(Date.now());
      }
      await this.update(dep, { state: DeploymentState.BUILDING, buildId: build.id, image: build.image });
      this.orderAlongside();
      // A commit that came while the build was being asked for found no build id to cancel.
      if (this.pending && !dep.supersededBy) this.cancelFor(dep, this.pending);

      const final = await this.follow(dep, build);
      if (!final) return this.finish(dep, DeploymentState.FAILED, "lost kilnd and could not reach it again");
      dep.stepsTotal = final.stepsTotal;
      dep.stepsCached = final.stepsCached;
      switch (final.state) {
        case BuildState.SUCCEEDED:
          dep.imageDigest = final.imageDigest;
          dep.times!.digestPushed = final.finishTime;
          return this.finish(dep, DeploymentState.SUCCEEDED, "");
        case BuildState.CANCELLED:
          if (dep.supersededBy) return this.finish(dep, DeploymentState.SUPERSEDED, `superseded by ${dep.supersededBy}`, dep.supersededBy);
          return this.finish(dep, DeploymentState.FAILED, `the build was cancelled on kilnd: ${final.error}`);
        default:
          if (final.error.startsWith("interrupted") && dep.attempts <= INTERRUPTED_RETRIES) {
            this.d.logger.warn({ deployment: dep.id, build: final.id, error: final.error }, "the build was interrupted; running it again");
            dep.buildId = "";
            continue;
          }
          return this.finish(dep, DeploymentState.FAILED, final.error);
      }
    }
  }

  /**
   * A push whose before links do not reach the newest push known (a delivery between them not
   * arrived yet, or a force push): kilnd's git cache says which commit is newer. An ancestor of
   * the newest is older and is not deployed; a descendant is newer and takes its place; on
   * split histories the later arrival wins. When git cannot say, the arrival is queued as
   * before (newest arrival wins), and the log says why.
   */
  /** "later": the awake machine went away; the loop orders the push once it has woken it. */
  private async orderPush(dep: Deployment, awake?: Kilnd): Promise<void | "later"> {
    const check = dep.orderCheck!;
    const queue = async () => {
      await this.d.advanceHead(dep.commit);
      dep.orderCheck = undefined;
      this.place(dep);
    };
    let base: { commit: string; id: string };
    let relation: CommitRelation;
    // Compared with the newest push placed; one placed meanwhile is compared with again.
    for (;;) {
      base = this.newestPush ? { commit: this.newestPush.commit, id: this.newestPush.id } : { commit: check.commit, id: check.deploymentId };
      if (base.commit === dep.commit) return this.finish(dep, DeploymentState.SUPERSEDED, `the same commit as the branch's newest push, delivered again: not deployed`, base.id || undefined);
      const kilnd = awake ?? (await this.wake(dep));
      if (!kilnd) return;
      try {
        const c = await this.secrets.forBuild();
        const r = await kilnd.compareCommits({ project: this.project.name, source: { url: this.project.git, commit: dep.commit, ...c.git }, base: base.commit }, { signal: this.abort.signal });
        relation = r.relation;
      } catch (e) {
        if (this.stopped) throw new Error("the scheduler is stopping");
        // The machine went away under a running build: the loop asks again once it is awake.
        if (awake && isGone(e)) {
          this.unordered.unshift(dep);
          return "later";
        }
        this.d.logger.warn({ deployment: dep.id, commit: dep.commit, base: base.commit, err: e }, "cannot order an out-of-order push against the branch's newest with git; the newest arrival wins");
        return queue();
      }
      if ((this.newestPush?.id ?? check.deploymentId) === base.id) break;
    }
    const older = (why: string) => this.finish(dep, DeploymentState.SUPERSEDED, why, base.id || undefined);
    switch (relation) {
      case CommitRelation.BEHIND:
        return older(`an older commit of the branch than ${base.commit} (git: its ancestor), delivered after it: not deployed`);
      case CommitRelation.IDENTICAL:
        return older(`the same commit as the branch's newest push, delivered again: not deployed`);
      case CommitRelation.DIVERGED:
        // A force push: neither is newer by history, so by arrival.
        if (base.id && base.id > dep.id) return older(`not on the history of ${base.commit} (a force push), which was delivered later: not deployed`);
        this.d.logger.info({ deployment: dep.id, commit: dep.commit, base: base.commit }, "a push off the branch's history (a force push): the later arrival wins");
        return queue();
      default:
        this.d.logger.info({ deployment: dep.id, commit: dep.commit, base: base.commit }, "an out-of-order push is newer than the branch's newest (git: a descendant)");
        return queue();
    }
  }

  /** Wakes the machine (bounded retries); undefined when the deployment ended FAILED. */
  private async wake(dep: Deployment): Promise<Kilnd | undefined> {
    let last: unknown;
    for (let i = 0; i < WAKE_ATTEMPTS && !this.stopped; i++) {
      try {
        const url = await this.d.driver.wake();
        if (this.kilnd?.url !== url) this.kilnd = { url, client: this.client(url) };
        if (!dep.times!.machineReady) dep.times!.machineReady = timestampFromMs(Date.now());
        return this.kilnd.client;
      } catch (e) {
        last = e;
        if (isPermanentWakeError(e)) break;
        this.d.logger.warn({ project: dep.project, err: e, attempt: i + 1 }, "waking the machine failed");
        await this.backoff(i + 1);
      }
    }
    if (this.stopped) throw new Error("the scheduler is stopping");
    await this.finish(dep, DeploymentState.FAILED, `cannot wake the machine: ${(last as Error)?.message ?? String(last)}`);
    return undefined;
  }

  /**
   * Relays the build's log until its final record. When the stream breaks (kilnd went away),
   * wakes the machine again and reads the record: a restarted kilnd says FAILED "interrupted".
   */
  private async follow(dep: Deployment, build: Build): Promise<Build | undefined> {
    let after = 0n;
    for (let attempt = 0; attempt <= RECONNECT_ATTEMPTS; attempt++) {
      try {
        const client = this.kilnd!.client;
        for await (const m of client.streamLogs({ buildId: build.id, follow: true, afterSeq: after }, { signal: this.abort.signal })) {
          if (m.event.case === "line") {
            after = m.event.value.seq;
            this.d.events.emit(dep.id, { case: "line", value: m.event.value });
          } else if (m.event.case === "build") {
            if (m.event.value.state !== BuildState.QUEUED && m.event.value.state !== BuildState.RUNNING) return m.event.value;
          }
        }
      } catch (e) {
        if (this.stopped) throw new Error("the scheduler is stopping");
        if (!isGone(e)) throw e;
        this.d.logger.warn({ deployment: dep.id, build: build.id, err: e }, "lost kilnd while following the build; reconnecting");
      }
      await this.backoff(attempt + 1);
      const kilnd = await this.wake(dep);
      if (!kilnd) return undefined;
      const b = await kilnd.getBuild({ buildId: build.id }).then(
        (r) => r.build,
        () => undefined,
      );
      if (b && b.state !== BuildState.QUEUED && b.state !== BuildState.RUNNING) return b;
    }
    return undefined;
  }

  /** The queue is empty: kilnd goes to sleep now, not after its idle timeout. */
  private async sleepMachine(): Promise<void> {
    const kilnd = this.kilnd;
    if (!kilnd) return;
    try {
      await kilnd.client.sleep({});
    } catch (e) {
      // Already asleep (gone), or busy with a build someone else asked for: the idle timeout decides.
      if (!isGone(e)) this.d.logger.warn({ err: e, project: this.d.project.name }, "kilnd did not go to sleep when asked");
    }
    this.kilnd = undefined;
    const asleep = await this.d.driver.waitAsleep(ASLEEP_TIMEOUT_MS);
    const now = Date.now();
    for (const dep of this.awakeFor.splice(0)) {
      if (!asleep || this.stopped) continue;
      dep.times!.machineAsleep = timestampFromMs(now);
      const ready = msFromTimestamp(dep.times!.machineReady);
      if (ready !== undefined) dep.times!.awake = durationFromMs(now - ready);
      await this.d.save(dep);
      this.d.events.emit(dep.id, { case: "deployment", value: dep });
    }
  }

  private async supersede(dep: Deployment, by: string): Promise<void> {
    await this.finish(dep, DeploymentState.SUPERSEDED, `superseded by ${by}`, by);
  }

  private async finish(dep: Deployment, state: DeploymentState, error: string, supersededBy?: string): Promise<void> {
    if (supersededBy) dep.supersededBy = supersededBy;
    await this.update(dep, { state, error });
    if (dep.times?.machineReady) this.awakeFor.push(dep);
    this.d.logger.info({ deployment: dep.id, project: dep.project, commit: dep.commit, state: DeploymentState[state], error: error || undefined }, "deployment finished");
  }

  private async update(dep: Deployment, patch: Partial<Pick<Deployment, "state" | "error" | "buildId" | "image">>): Promise<void> {
    if (this.stopped) throw new Error("the scheduler is stopping");
    Object.assign(dep, patch);
    await this.d.save(dep);
    this.d.events.emit(dep.id, { case: "deployment", value: dep });
  }

  /** requestKey: the deployment and attempt, so that asking again (a replica taking over) is the same build. */
  private async buildRequest(dep: Deployment) {
    const p = this.project;
    const c = await this.secrets.forBuild();
    return {
      project: p.name,
      source: { kind: { case: "git" as const, value: { url: p.git, commit: dep.commit, ...c.git } } },
      requestKey: `${dep.id}.${dep.attempts + 1}`,
      containerfile: p.containerfile,
      context: p.context,
      image: p.image,
      buildArgs: p.buildArgs,
      secrets: c.secrets,
      registryCredentials: c.registryCredentials,
    };
  }

  private client(url: string): Kilnd {
    if (this.d.connect) return this.d.connect(url);
    const file = this.project.kilndTokenFile;
    return kilndClient(url, file ? tokenFile(file) : undefined);
  }

  private backoff(n: number): Promise<void> {
    const ms = Math.min(5000, (this.d.backoffMs ?? 200) * 2 ** (n - 1));
    return new Promise((r) => setTimeout(r, ms));
  }
}

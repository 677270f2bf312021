// What the scheduler keeps: projects, deployments (each project's queue is its open ones), the
// webhook deliveries seen, the order of each branch's pushes, and who drives each project's
// queue. Two stores: files on the scheduler's disk (the embedded default, one scheduler) and
// PostgreSQL (any number of replicas on one database).
import type { Deployment } from "../../gen/kiln/v1/scheduler_pb.js";
import { KilnError } from "../../errors/kiln-error.js";
import type { ProjectConfig } from "../config.js";
import type { ProjectSource, StoredProject } from "../projects.js";

/** A replica's hold on one project's queue: only its holder drives the queue and writes its deployments. */
export interface Lease {
  project: string;
  /** Grows at every change of holder: a write under an older epoch is refused. */
  epoch: number;
}

/** The outcome of accepting a commit. */
export interface Accepted {
  deployment: Deployment;
  /** The same webhook delivery was accepted before: this is its deployment, nothing new. */
  duplicate: boolean;
}

/** The lease was taken by another replica (this one stalled past its expiry): stop driving. */
export class LeaseLost extends KilnError {
  constructor(project: string) {
    super("unavailable", `this replica no longer holds project ${project}'s queue`);
  }
}

export interface StoreEvents {
  /** A project has new work (a deployment accepted anywhere, a project changed or deleted). */
  work(project: string): void;
  /** A deployment's record changed (written by whichever replica drives it). */
  deployment(id: string): void;
  /** Notifications may have been missed (the connection that brings them was re-made). */
  resync(): void;
}

export interface SchedulerStore {
  /** Each replica's name in leases and logs. */
  readonly replica: string;
  /** Migrates, loads; events are this store's notifications (for other replicas' writes too). */
  start(events: StoreEvents): Promise<void>;
  close(): Promise<void>;

  /**
   * Records a new deployment durably and gives it its id: a project's ids sort in the order its
   * deployments were accepted (its queue's order), whatever the replicas' clocks say. A delivery seen before answers with its deployment. A push
   * older than the branch's newest known head (by the push events' before links) is recorded
   * SUPERSEDED by the newest deployment of that head, and is not queued. A push whose own before
   * links do not reach the head is queued with orderCheck naming the head, which it leaves as it is.
   */
  accept(d: Deployment): Promise<Accepted>;
  get(id: string): Promise<Deployment | undefined>;
  /** Newest first. */
  list(project: string | undefined, limit: number): Promise<Deployment[]>;
  /** The project's deployments that have not ended, oldest first: its queue. */
  open(project: string): Promise<Deployment[]>;
  /** A change by the lease's holder; LeaseLost when the lease is no longer held. */
  save(d: Deployment, lease: Lease): Promise<void>;
  /**
   * The holder learned from git that a push accepted unordered (orderCheck) is newer than the
   * branch's head: it becomes the head that later pushes are ordered against.
   */
  advanceHead(project: string, commit: string, lease: Lease): Promise<void>;

  projects(): Promise<StoredProject[]>;
  project(name: string): Promise<StoredProject | undefined>;
  /** The project configured for a push of GitHub repository owner/name to a branch. */
  projectFor(repository: string, branch: string): Promise<ProjectConfig | undefined>;
  /** Creates (AlreadyExists when taken unless replace) or replaces a project. */
  putProject(p: ProjectConfig, source: ProjectSource, mode: "create" | "replace" | "upsert"): Promise<void>;
  /** Removes the project, ends its open deployments FAILED and ends any hold on its queue. */
  deleteProject(name: string, reason: string): Promise<boolean>;

  /** Takes the project's queue if nobody holds it (or the holder's lease expired). */
  claim(project: string): Promise<Lease | undefined>;
  /** Extends this replica's leases; answers the projects still held. */
  renew(): Promise<Set<string>>;
  release(lease: Lease): Promise<void>;
  /** Projects with open deployments that no replica holds (a holder died, a signal was missed). */
  orphans(limit: number): Promise<string[]>;
}

// A build while it is alive: its record, its log, the process it is running, and how to stop it.
import { KilnError } from "../errors/kiln-error.js";
import { create } from "@bufbuild/protobuf";
import { BuildState, LogStream, Phase, PhaseDurationsSchema, type Build } from "../gen/kiln/v1/builder_pb.js";
import { durationFromMs, msFromTimestamp, timestampFromMs } from "../util/time.js";
import type { BuildLog } from "../logs/build-log.js";
import type { RunningProcess } from "../process/run.js";
import type { BuildSpec } from "../validate/build-request.js";
import type { Masker } from "../secrets/masker.js";
import { createDeferred, type Deferred } from "../util/deferred.js";

export type ProcessKind = "git" | "podman";

export interface StopRequest {
  reason: string;
  /** A stop that is not the user's wish (kilnd shutting down) ends the build FAILED, not CANCELLED. */
  asFailure: boolean;
}

export class ActiveBuild {
  readonly abort = new AbortController();
  /** Settles once the commit is fetched (or the build ended before that): Build returns then. */
  readonly accepted: Deferred<void> = createDeferred();
  /** Settles once the build and everything it started are gone, its predecessor's included. */
  readonly done: Deferred<void> = createDeferred();
  stop: StopRequest | undefined;
  /** Settles once a stop has ended the build's processes and removed their containers. */
  killed: Promise<void> | undefined;
  /** The processes the build runs now: one at a time, but a first build's skeleton runs beside kiln's RUN steps. */
  readonly procs = new Set<{ kind: ProcessKind; run: RunningProcess }>();
  /**
   * Work that follows a successful build's result, set by the pipeline (the fast path's record of
   * the pushed image as the project's next base). It runs after the log closes and before the
   * build is done: the project's next build, the prune and idle exit wait for it. What it says
   * goes to kilnd's log.
   */
  afterward: (() => Promise<string>) | undefined;

  constructor(
    readonly record: Build,
    readonly spec: BuildSpec,
    readonly log: BuildLog,
    readonly tmpDir: string,
    /** Every secret of the build (values, passwords, their encodings): masked in all it says. */
    readonly masker: Masker,
  ) {}

  get id(): string {
    return this.record.id;
  }

  /** The phase the build is in: kept in its record, changed only by enter(). */
  get phase(): Phase {
    return this.record.phase;
  }

  enter(phase: Phase): void {
    this.record.phase = phase;
  }

  /** It holds a build slot: RUNNING from now. */
  markRunning(now = Date.now()): void {
    this.record.state = BuildState.RUNNING;
    this.record.startTime = timestampFromMs(now);
  }

  /** The end: state, error, finish time and total duration, written once, here. */
  finish(state: BuildState.SUCCEEDED | BuildState.FAILED | BuildState.CANCELLED, error: string, now = Date.now()): void {
    const rec = this.record;
    rec.state = state;
    rec.error = error;
    rec.finishTime = timestampFromMs(now);
    rec.durations ??= create(PhaseDurationsSchema);
    rec.durations.total = durationFromMs(now - (msFromTimestamp(rec.createTime) ?? now));
  }

  say(text: string): void {
    this.log.append(text, LogStream.SYSTEM, this.phase);
  }
}

/** Thrown inside the pipeline when a stop was requested; the engine turns it into the end state. */
export class StopSignal extends KilnError {
  constructor(reason = "stopped") {
    super("cancelled", reason);
  }
}

// Fan-out of a deployment's changes and relayed log lines to FollowDeployment streams: one feed
// per live deployment (src/fanout/feed.ts, the design kilnd's build logs use), so a stalled
// follower costs nothing and a follower's position is taken when it asks, before the first
// message is sent: nothing emitted in between, the final state included, is lost.
import { Feed } from "../fanout/feed.js";
import type { LogLine } from "../gen/kiln/v1/builder_pb.js";
import { clone } from "@bufbuild/protobuf";
import { DeploymentSchema, DeploymentState, type Deployment } from "../gen/kiln/v1/scheduler_pb.js";

export const isFinal = (s: DeploymentState) =>
  s === DeploymentState.SUCCEEDED || s === DeploymentState.FAILED || s === DeploymentState.SUPERSEDED;

export type DeploymentEvent = { case: "deployment"; value: Deployment } | { case: "line"; value: LogLine };

interface Numbered {
  seq: number;
  event: DeploymentEvent;
}

/** Events of one deployment kept for followers behind the newest (the rest are counted as missed). */
const WINDOW = 10_000;

export class DeploymentEvents {
  private readonly feeds = new Map<string, Feed<Numbered>>();

  /** Deployments with a feed (not ended). */
  get live(): number {
    return this.feeds.size;
  }

  /** Whether the deployment has a feed here (followed, or driven, and not ended). */
  has(id: string): boolean {
    return this.feeds.has(id);
  }

  private feedOf(id: string): Feed<Numbered> {
    let f = this.feeds.get(id);
    if (!f) this.feeds.set(id, (f = new Feed<Numbered>({ maxEntries: WINDOW })));
    return f;
  }

  /** A final state ends the deployment's feed: its followers get what is left, then the end. */
  emit(id: string, e: DeploymentEvent): void {
    const final = e.case === "deployment" && isFinal(e.value.state);
    // A change after the end (the machine went to sleep) has no followers: they left at the end.
    if (final && !this.feeds.has(id)) return;
    const feed = this.feedOf(id);
    // A snapshot: the worker goes on changing its record, a slow follower reads this moment's.
    const event: DeploymentEvent = e.case === "deployment" ? { case: "deployment", value: clone(DeploymentSchema, e.value) } : e;
    feed.append((seq) => ({ seq, event }));
    if (final) {
      feed.close();
      this.feeds.delete(id);
    }
  }

  /**
   * The deployment's events from now on, until it ends or the signal aborts. onGap: a follower
   * too slow for the window missed that many.
   */
  follow(id: string, signal: AbortSignal, onGap?: (missed: number) => void): AsyncGenerator<DeploymentEvent> {
    const feed = this.feedOf(id);
    const entries = feed.read(feed.lastSeq, { follow: true, signal, ...(onGap ? { onGap } : {}) });
    return (async function* () {
      for await (const e of entries) yield e.event;
    })();
  }
}

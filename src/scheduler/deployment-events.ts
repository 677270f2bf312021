// Fan-out of a deployment's changes and relayed log lines to FollowDeployment streams.
import type { LogLine } from "../gen/kiln/v1/builder_pb.js";
import type { Deployment } from "../gen/kiln/v1/scheduler_pb.js";

export type DeploymentEvent = { case: "deployment"; value: Deployment } | { case: "line"; value: LogLine };

export class DeploymentEvents {
  private readonly listeners = new Map<string, Set<(e: DeploymentEvent) => void>>();

  emit(id: string, e: DeploymentEvent): void {
    for (const l of this.listeners.get(id) ?? []) l(e);
  }

  /** Events of one deployment as they come, until signal aborts or the caller stops reading. */
  async *follow(id: string, signal: AbortSignal): AsyncGenerator<DeploymentEvent> {
    const queue: DeploymentEvent[] = [];
    let wake: (() => void) | undefined;
    const listener = (e: DeploymentEvent) => {
      queue.push(e);
      wake?.();
    };
    const set = this.listeners.get(id) ?? new Set();
    set.add(listener);
    this.listeners.set(id, set);
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        while (queue.length) yield queue.shift()!;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(id);
    }
  }
}

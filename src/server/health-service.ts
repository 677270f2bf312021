// grpc.health.v1: Check, List and Watch, for the machine's health checks and load balancers.
import type { ServiceImpl } from "@connectrpc/connect";
import { KilnError } from "../errors/kiln-error.js";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../gen/grpc/health/v1/health_pb.js";

export interface HealthState {
  status: Status;
  /** Called when the daemon starts shutting down: watchers hear NOT_SERVING. */
  setNotServing(): void;
  readonly changed: Promise<void>;
}

export function createHealthState(): HealthState {
  let wake!: () => void;
  let changed = new Promise<void>((r) => (wake = r));
  const state: HealthState = {
    status: Status.SERVING,
    setNotServing() {
      state.status = Status.NOT_SERVING;
      const w = wake;
      changed = new Promise<void>((r) => (wake = r));
      w();
    },
    get changed() {
      return changed;
    },
  };
  return state;
}

export function createHealthService(state: HealthState, services: readonly string[]): ServiceImpl<typeof Health> {
  const known = new Set(["", ...services]);
  const check = (service: string) => {
    if (!known.has(service)) throw new KilnError("not_found", `unknown service ${JSON.stringify(service)}`);
    return { status: state.status };
  };
  return {
    check: (req) => check(req.service),
    list: () => ({ statuses: Object.fromEntries([...known].map((s) => [s, { status: state.status }])) }),
    async *watch(req, ctx) {
      if (!known.has(req.service)) {
        yield { status: Status.SERVICE_UNKNOWN };
        return;
      }
      let last: Status | undefined;
      while (!ctx.signal.aborted) {
        if (state.status !== last) {
          last = state.status;
          yield { status: last };
        }
        if (last === Status.NOT_SERVING) return;
        await Promise.race([state.changed, new Promise((r) => ctx.signal.addEventListener("abort", r, { once: true }))]);
      }
    },
  };
}

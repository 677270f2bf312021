// Prometheus metrics, served as plain HTTP on kilnd's port (GET /metrics).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { BuildState, type Build } from "../gen/kiln/v1/builder_pb.js";
import { msFromDuration } from "../util/time.js";

export interface MetricsSources {
  running(): number;
  queued(): number;
  logSubscribers(): number;
}

export function createMetrics(src: MetricsSources) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "kilnd_" });
  const builds = new Counter({ name: "kiln_builds_total", help: "Builds that ended, by result", labelNames: ["result"], registers: [registry] });
  const phase = new Histogram({
    name: "kiln_build_phase_seconds",
    help: "Duration of each build phase",
    labelNames: ["phase"],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 180, 600],
    registers: [registry],
  });
  const steps = new Counter({ name: "kiln_build_steps_total", help: "Containerfile steps run, by whether they came from the layer cache", labelNames: ["source"], registers: [registry] });
  new Gauge({ name: "kiln_builds_running", help: "Builds running podman now", registers: [registry], collect() { this.set(src.running()); } });
  new Gauge({ name: "kiln_builds_queued", help: "Builds accepted and not yet running", registers: [registry], collect() { this.set(src.queued()); } });
  new Gauge({ name: "kiln_log_subscribers", help: "Open StreamLogs readers", registers: [registry], collect() { this.set(src.logSubscribers()); } });

  return {
    registry,
    buildFinished(b: Build): void {
      builds.inc({ result: (BuildState[b.state] ?? "UNKNOWN").toLowerCase() });
      const d = b.durations;
      if (d?.fetch) phase.observe({ phase: "fetch" }, msFromDuration(d.fetch) / 1000);
      if (d?.build) phase.observe({ phase: "build" }, msFromDuration(d.build) / 1000);
      if (d?.push) phase.observe({ phase: "push" }, msFromDuration(d.push) / 1000);
      if (b.stepsTotal) {
        steps.inc({ source: "cache" }, b.stepsCached);
        steps.inc({ source: "built" }, b.stepsTotal - b.stepsCached);
      }
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

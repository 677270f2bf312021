// Prometheus metrics, served as plain HTTP on kilnd's port (GET /metrics).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { BuildState, type Build } from "../gen/kiln/v1/builder_pb.js";
import type { VolumeUsage } from "../storage/disk-usage.js";
import type { OverlayStatus } from "../storage/overlay-check.js";
import { msFromDuration } from "../util/time.js";

export interface MetricsSources {
  running(): number;
  queued(): number;
  settling(): number;
  logSubscribers(): number;
  volume(): Promise<VolumeUsage>;
  overlay(): OverlayStatus;
  /** Counts kept across kilnd's lives (it exits whenever the machine sleeps). */
  persisted: { resets: number; idleExits: number };
}

export function createMetrics(src: MetricsSources) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "kilnd_" });
  const registers = [registry];
  const builds = new Counter({ name: "kiln_builds_total", help: "Builds that ended, by result", labelNames: ["result"], registers });
  const phase = new Histogram({
    name: "kiln_build_phase_seconds",
    help: "Duration of each build phase",
    labelNames: ["phase"],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 180, 600],
    registers,
  });
  const steps = new Counter({ name: "kiln_build_steps_total", help: "Containerfile steps run, by whether they came from the layer cache", labelNames: ["source"], registers });
  new Gauge({ name: "kiln_builds_running", help: "Builds running podman now", registers, collect() { this.set(src.running()); } });
  new Gauge({ name: "kiln_builds_queued", help: "Builds accepted and not yet running", registers, collect() { this.set(src.queued()); } });
  new Gauge({ name: "kiln_builds_settling", help: "Builds whose result is out and whose work after it (the next builds' base, records, the prune) still runs", registers, collect() { this.set(src.settling()); } });
  new Gauge({ name: "kiln_log_subscribers", help: "Open StreamLogs readers", registers, collect() { this.set(src.logSubscribers()); } });
  new Gauge({
    name: "kiln_volume_bytes",
    help: "The data volume's size and use",
    labelNames: ["kind"],
    registers,
    async collect() {
      const u = await src.volume();
      this.set({ kind: "total" }, u.totalBytes);
      this.set({ kind: "free" }, u.freeBytes);
      this.set({ kind: "used" }, u.totalBytes - u.freeBytes);
    },
  });
  new Gauge({
    name: "kiln_storage_native_overlay",
    help: "1 when container storage is on native overlay, 0 when not (slow builds), -1 before the check",
    registers,
    collect() {
      const o = src.overlay();
      this.set(o.checked ? (o.native ? 1 : 0) : -1);
    },
  });
  const prunes = new Counter({ name: "kiln_prunes_total", help: "Prune passes that removed images", registers });
  const prunedImages = new Counter({ name: "kiln_pruned_images_total", help: "Images removed by pruning", registers });
  const freed = new Counter({ name: "kiln_freed_bytes_total", help: "Volume space freed, by prune or reset", labelNames: ["by"], registers });
  const resets = new Counter({ name: "kiln_storage_resets_total", help: "Container storage resets (the volume passed the threshold), over kilnd's lives", registers });
  const resetSeconds = new Histogram({ name: "kiln_storage_reset_seconds", help: "How long a storage reset took", buckets: [0.5, 1, 2, 5, 10, 30, 60, 300], registers });
  const idleExits = new Counter({ name: "kiln_idle_exits_total", help: "Times kilnd exited idle so the machine could sleep, over kilnd's lives", registers });
  resets.inc(src.persisted.resets);
  idleExits.inc(src.persisted.idleExits);

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
    pruned(images: number, bytes: number): void {
      prunes.inc();
      prunedImages.inc(images);
      freed.inc({ by: "prune" }, bytes);
    },
    reset(durationMs: number, bytes: number): void {
      resets.inc();
      resetSeconds.observe(durationMs / 1000);
      freed.inc({ by: "reset" }, bytes);
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

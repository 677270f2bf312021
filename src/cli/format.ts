// How the CLI shows builds and log lines to a person.
import { toJsonString } from "@bufbuild/protobuf";
import { BuildSchema, BuildState, type Build } from "../gen/kiln/v1/builder_pb.js";
import { msFromDuration } from "../util/time.js";

export const stateName = (s: BuildState) => (BuildState[s] ?? "UNKNOWN").toLowerCase();

const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** One line: state, image@digest, durations, cache use, and the error if any. */
export function summary(b: Build): string {
  const d = b.durations;
  const parts = [stateName(b.state).toUpperCase(), b.id, b.imageDigest ? `${b.image}@${b.imageDigest}` : b.image];
  if (d?.total) {
    const phases = [["fetch", d.fetch], ["build", d.build], ["push", d.push]]
      .filter(([, v]) => v)
      .map(([k, v]) => `${k as string} ${secs(msFromDuration(v as typeof d.fetch))}`);
    parts.push(`in ${secs(msFromDuration(d.total))}${phases.length ? ` (${phases.join(", ")})` : ""}`);
  }
  if (b.stepsTotal) parts.push(`${b.stepsCached}/${b.stepsTotal} steps cached`);
  if (b.fastPath) parts.push(b.firstBuild ? "first build" : "fast path");
  if (b.error) parts.push(`error: ${b.error}`);
  return parts.join("  ");
}

export function table(builds: Build[]): string {
  const rows = builds.map((b) => [
    b.id,
    b.project,
    stateName(b.state),
    b.commit.slice(0, 12),
    b.durations?.total ? secs(msFromDuration(b.durations.total)) : "-",
    b.imageDigest ? b.imageDigest.slice(0, 19) : "-",
  ]);
  const head = ["ID", "PROJECT", "STATE", "COMMIT", "TOTAL", "DIGEST"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

export const asJson = (b: Build) => toJsonString(BuildSchema, b, { prettySpaces: 2 });

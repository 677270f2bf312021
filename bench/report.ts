// Benchmark results: min / median / max per scenario and engine, the ratios between engines
// measured in the same run, as JSON, a Markdown table and an SVG chart (log scale).
import type { Segment } from "./lib/timeline.js";

export interface Series {
  scenario: string;
  engine: string;
  samplesMs: number[];
}

export interface Summary extends Series {
  minMs: number;
  medianMs: number;
  maxMs: number;
}

export function summarize(s: Series): Summary {
  const sorted = [...s.samplesMs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { ...s, minMs: sorted[0]!, medianMs: median, maxMs: sorted.at(-1)! };
}

const fmt = (ms: number) => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);

export function markdown(rows: Summary[], baseline = "kiln"): string {
  const lines = ["| scenario | engine | runs | min | median | max | median / kiln |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"];
  for (const r of rows) {
    const base = rows.find((x) => x.scenario === r.scenario && x.engine === baseline);
    const ratio = base && r.engine !== baseline ? `${(r.medianMs / base.medianMs).toFixed(2)}x` : "";
    lines.push(`| ${r.scenario} | ${r.engine} | ${r.samplesMs.length} | ${fmt(r.minMs)} | ${fmt(r.medianMs)} | ${fmt(r.maxMs)} | ${ratio} |`);
  }
  return lines.join("\n");
}

const COLORS: Record<string, string> = {
  kiln: "#d9480f",
  "kiln-full": "#f08c00",
  buildah: "#2f9e44",
  podman: "#1c7ed6",
  buildkit: "#7048e8",
  clean: "#868e96",
  "clean-preloaded": "#adb5bd",
  kilnd: "#e8590c",
  "kiln-scheduler": "#c2255c",
};

/** The ratios issue 5 sets targets for, from the medians of one run. */
export function ratioTable(rows: Summary[]): string {
  const med = (scenario: string, engine: string) => rows.find((r) => r.scenario === scenario && r.engine === engine)?.medianMs;
  const lines = ["| ratio (medians) | value | target |", "| --- | ---: | --- |"];
  const add = (label: string, a: number | undefined, b: number | undefined, target: string) => {
    if (a !== undefined && b !== undefined) lines.push(`| ${label} | ${(a / b).toFixed(2)} | ${target} |`);
  };
  for (const s of ["warm", "no-change", "warm · node-api", "no-change · node-api"]) add(`kiln / podman by hand, ${s}`, med(s, "kiln"), med(s, "podman"), "≤ 1.05");
  add("clean runner (base pulled) / kiln, warm", med("warm", "clean"), med("warm", "kiln"), "≥ 10");
  add("clean runner (base preloaded) / kiln, warm", med("warm", "clean-preloaded"), med("warm", "kiln"), "reported");
  const scenarios = [...new Set(rows.map((r) => r.scenario))];
  for (const s of scenarios) add(`kiln / BuildKit, ${s}`, med(s, "kiln"), med(s, "buildkit"), "≤ 1.0");
  for (const s of scenarios) add(`kiln-full / buildah by hand, ${s} (kiln's overhead on the podman path)`, med(s, "kiln-full"), med(s, "buildah"), "≤ 1.05");
  add("log readers: 10 stalled / none (kiln-full build)", med("log readers", "kiln-full, 10 stalled"), med("log readers", "kiln-full, none"), "≈ 1");
  const warm = med("warm", "kiln");
  const start = med("wake: start → RPC", "kilnd");
  if (warm !== undefined) lines.push(`| kiln warm median (commit → pushed digest) | ${fmt(warm)} | < 600 ms |`);
  if (start !== undefined) lines.push(`| kilnd start → first RPC, median | ${fmt(start)} | < 250 ms |`);
  return lines.join("\n");
}

/** Grouped bars of the medians per scenario, a log-scale y axis, min-max whiskers. */
export function svgChart(rows: Summary[], title: string): string {
  const scenarios = [...new Set(rows.map((r) => r.scenario))];
  const engines = [...new Set(rows.map((r) => r.engine))];
  const W = Math.max(760, 110 * scenarios.length);
  const legendPerRow = Math.max(1, Math.floor((W - 70) / 125));
  const legendRows = Math.ceil(engines.length / legendPerRow);
  const left = 70, right = 20, top = 40, bottom = 60 + 18 * legendRows;
  const H = 360 + 18 * legendRows;
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...rows.map((r) => r.minMs)))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...rows.map((r) => r.maxMs)))));
  const y = (ms: number) => top + (H - top - bottom) * (1 - (Math.log10(ms) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)));
  const groupW = (W - left - right) / scenarios.length;
  const most = Math.max(...scenarios.map((sc) => rows.filter((r) => r.scenario === sc).length));
  const barW = Math.min(28, (groupW - 16) / most);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`, `<rect width="${W}" height="${H}" fill="white"/>`, `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`];
  for (let p = lo; p <= hi; p *= 10) {
    out.push(`<line x1="${left}" x2="${W - right}" y1="${y(p)}" y2="${y(p)}" stroke="#ddd"/>`, `<text x="${left - 6}" y="${y(p) + 4}" text-anchor="end">${fmt(p)}</text>`);
  }
  scenarios.forEach((sc, i) => {
    // Only the engines that ran this scenario, centred in its group.
    const present = engines.filter((en) => rows.some((r) => r.scenario === sc && r.engine === en));
    const gx = left + i * groupW + (groupW - barW * present.length) / 2;
    present.forEach((en, j) => {
      const r = rows.find((x) => x.scenario === sc && x.engine === en)!;
      const x = gx + j * barW;
      out.push(`<rect x="${x + 2}" y="${y(r.medianMs)}" width="${barW - 4}" height="${H - bottom - y(r.medianMs)}" fill="${COLORS[en] ?? "#444"}"><title>${sc} ${en}: median ${fmt(r.medianMs)}</title></rect>`);
      out.push(`<line x1="${x + barW / 2}" x2="${x + barW / 2}" y1="${y(r.minMs)}" y2="${y(r.maxMs)}" stroke="black"/>`);
    });
    // Long names ("deps · node-api", "wake: webhook → digest") on two lines.
    const [first, ...rest] = sc.split(/ · |: /);
    const cx = left + i * groupW + groupW / 2;
    out.push(`<text x="${cx}" y="${H - bottom + 18}" text-anchor="middle">${first}</text>`);
    if (rest.length) out.push(`<text x="${cx}" y="${H - bottom + 32}" text-anchor="middle" font-size="11">${rest.join(" ")}</text>`);
  });
  engines.forEach((en, j) => {
    const lx = left + (j % legendPerRow) * 125;
    const ly = H - 18 * legendRows + 18 * Math.floor(j / legendPerRow) - 6;
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${COLORS[en] ?? "#444"}"/>`, `<text x="${lx + 16}" y="${ly}">${en}</text>`);
  });
  out.push("</svg>");
  return out.join("\n");
}

/**
 * The profile of each row's median run: where its time went, phase by phase and step by step,
 * for the engines whose output says so (kiln, kiln-full, buildah, podman, BuildKit).
 */
export function profileMarkdown(rows: Summary[], profiles: Map<string, Segment[]>): string {
  const out: string[] = [];
  const scenarios = [...new Set(rows.map((r) => r.scenario))];
  for (const sc of scenarios) {
    const engines = rows.filter((r) => r.scenario === sc && profiles.has(`${sc}/${r.engine}`));
    if (!engines.length) continue;
    out.push(`### ${sc}`, "");
    for (const r of engines) {
      const segs = profiles.get(`${sc}/${r.engine}`)!;
      out.push(`**${r.engine}**, its median run (${fmt(r.medianMs)}):`, "", "| phase or step | ms | |", "| --- | ---: | --- |");
      for (const s of segs) out.push(`| ${s.label.replace(/\|/g, "\\|")} | ${s.ms.toFixed(0)} | ${s.cached ? "cached" : ""} |`);
      out.push("");
    }
  }
  return out.join("\n");
}

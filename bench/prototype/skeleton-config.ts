// A prototype for the cold plan (README, "What is left on issue 14"): kiln would run a first
// build's COPY and RUN steps itself, and needs the image config buildah would have written for the
// whole Containerfile. Instead of writing every metadata instruction's effect in buildah's words,
// kiln could let buildah build a skeleton of the Containerfile: each COPY, ADD and RUN replaced by a
// LABEL step with a key of its own, so that buildah runs only metadata steps (ENV expansion, ARG,
// USER, WORKDIR, SHELL, CMD and ENTRYPOINT, HEALTHCHECK...: buildah's own code, not kiln's copy of
// it). The skeleton's config, with those labels taken out and their history lines made the real
// steps' (which kiln writes already on the fast path), should be the real build's config.
//
// This script checks that claim against buildah itself, on the example apps and on a Containerfile
// made of the metadata instructions most likely to differ, and times the skeleton's build against
// the real one's (both without cache, on the bench's buildah storage, where the base is present).
// Run after `npm run bench` (it uses bench/work/buildah): npx tsx bench/prototype/skeleton-config.ts
// Not part of kiln: a measurement.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dirname, "../..");
const W = join(ROOT, "bench/work/buildah");
if (!existsSync(join(W, "storage.conf"))) throw new Error("run npm run bench first (it leaves bench/work/buildah)");
const env = {
  ...process.env,
  CONTAINERS_STORAGE_CONF: join(W, "storage.conf"),
  CONTAINERS_CONF: join(W, "containers.conf"),
  CONTAINERS_REGISTRIES_CONF: join(W, "registries.conf"),
  TMPDIR: join(W, "tmp"),
};
const buildah = (...args: string[]) => execFileSync("buildah", args, { env, encoding: "utf8", maxBuffer: 64 << 20 });

const TRICKY = `ARG BASE=127.0.0.1:5000/kiln/node:20-slim
FROM \${BASE}
ARG GREETING=hi
ARG PORT=9090
ENV A=1 B="two words"
WORKDIR /srv
COPY package.json ./
ENV PATH=/srv/bin:$PATH C=\${A}x \\
    D=$B
RUN echo $GREETING > /srv/g.txt
WORKDIR app
USER node:node
LABEL org.example.greeting=$GREETING version="1.0"
EXPOSE $PORT 53/udp
COPY --chown=node:node src/ ./src/
ADD package.json /srv/added.json
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD node -e "process.exit(0)"
VOLUME /data
SHELL ["/bin/bash", "-c"]
ENTRYPOINT ["node"]
CMD src/server.js
ONBUILD RUN echo later
`;

const cases: { name: string; example: string; containerfile?: string }[] = [
  { name: "hello-node", example: "hello-node" },
  { name: "node-api", example: "node-api" },
  { name: "ts-service", example: "ts-service" },
  { name: "metadata", example: "hello-node", containerfile: TRICKY },
];

/** The Containerfile with every COPY, ADD and RUN after the first FROM as a LABEL step of its own. */
function skeleton(text: string, key: string): string {
  const out: string[] = [];
  let seenFrom = false;
  let n = 0;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    // One instruction, with its continuation lines.
    const start = i;
    while (/\\\s*$/.test(lines[i]!) && i + 1 < lines.length) i++;
    const instruction = lines.slice(start, i + 1);
    const word = /^\s*([A-Za-z]+)/.exec(instruction[0]!)?.[1]?.toUpperCase();
    if (word === "FROM") seenFrom = true;
    if (seenFrom && (word === "COPY" || word === "ADD" || word === "RUN")) out.push(`LABEL "${key}.${n++}"="x"`);
    else out.push(...instruction);
  }
  return out.join("\n");
}

type RunConfig = { Labels?: Record<string, string>; Hostname?: string };
type Config = { created?: string; container?: string; parent?: string; config?: RunConfig; container_config?: RunConfig; rootfs: { diff_ids: string[] }; history: { created?: string; created_by?: string; empty_layer?: boolean; comment?: string }[] };

const configOf = (image: string): Config => JSON.parse((JSON.parse(buildah("inspect", "--type", "image", image)) as { Config: string }).Config) as Config;

/** Keys sorted, so that two configs compare as text. */
const canonical = (v: unknown): unknown =>
  Array.isArray(v) ? v.map(canonical) : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, x]) => [k, canonical(x)])) : v;

const timed = (args: string[]) => {
  const t0 = performance.now();
  buildah(...args);
  return Math.round(performance.now() - t0);
};

let failed = 0;
for (const c of cases) {
  const ctx = mkdtempSync(join(tmpdir(), `kiln-skeleton-${c.name}-`));
  try {
    cpSync(join(ROOT, "examples", c.example), ctx, { recursive: true });
    if (c.containerfile) writeFileSync(join(ctx, "Containerfile"), c.containerfile);
    const text = readFileSync(join(ctx, "Containerfile"), "utf8");
    const key = `kiln.skeleton.${randomBytes(6).toString("hex")}`;
    writeFileSync(join(ctx, "Containerfile.skeleton"), skeleton(text, key));
    const common = ["bud", "--pull=false", "--layers", "--no-cache", "--format", "docker", "--network=host"];
    const realMs = timed([...common, "-f", join(ctx, "Containerfile"), "-t", `localhost/skeleton-real-${c.name}`, ctx]);
    const skelMs = timed([...common, "-f", join(ctx, "Containerfile.skeleton"), "-t", `localhost/skeleton-skel-${c.name}`, ctx]);
    const real = configOf(`localhost/skeleton-real-${c.name}`);
    const skel = configOf(`localhost/skeleton-skel-${c.name}`);

    // The skeleton as kiln would finish it: its labels out (of the config, and of the Docker
    // format's copy of it, container_config), its LABEL lines made the real steps'.
    for (const labels of [skel.config?.Labels ?? {}, skel.container_config?.Labels ?? {}]) {
      for (const k of Object.keys(labels)) if (k.startsWith(`${key}.`)) delete labels[k];
    }
    const problems: string[] = [];
    if (real.history.length !== skel.history.length) problems.push(`history: ${real.history.length} entries against the skeleton's ${skel.history.length}`);
    let layers = 0;
    skel.history.forEach((h, i) => {
      if (!h.created_by?.includes(key)) return;
      const r = real.history[i];
      if (!r || r.empty_layer || !/^(\/bin\/sh -c #\(nop\) (COPY|ADD) |\/bin\/sh -c |\|\d+ )/.test(r.created_by ?? "")) problems.push(`history ${i}: the skeleton's LABEL stands where the real build has ${JSON.stringify(r?.created_by)}`);
      skel.history[i] = { ...h, created_by: r?.created_by ?? "" };
      delete skel.history[i]!.empty_layer;
      layers++;
    });
    if (real.rootfs.diff_ids.length !== skel.rootfs.diff_ids.length + layers) problems.push(`layers: ${real.rootfs.diff_ids.length} against the skeleton's ${skel.rootfs.diff_ids.length} + ${layers}`);
    // What differs between any two builds: times, the working container (its ID, and its hostname
    // in both configs), the new layers' digests, and the IDs of the images each step stood on (the
    // Docker format's parent, each step's history comment): those are made of the others.
    for (const x of [real, skel]) {
      delete x.created;
      delete x.container;
      delete x.parent;
      for (const rc of [x.config, x.container_config]) if (rc) delete rc.Hostname;
      x.rootfs.diff_ids = [];
      for (const h of x.history) {
        delete h.created;
        if (/^FROM [0-9a-f]{12}$/.test(h.comment ?? "")) h.comment = "FROM <the step's parent image>";
      }
    }
    const a = JSON.stringify(canonical(real), null, 1).split("\n");
    const b = JSON.stringify(canonical(skel), null, 1).split("\n");
    a.forEach((line, i) => line !== b[i] && problems.push(`config line ${i}: real ${line.trim()} | skeleton ${b[i]?.trim()}`));
    if (b.length > a.length) problems.push(`the skeleton's config has ${b.length - a.length} more lines`);
    console.log(`${c.name}: real build ${realMs} ms, skeleton ${skelMs} ms (no cache, base present); ${layers} steps stood in for; config ${problems.length === 0 ? "identical" : "DIFFERS"}`);
    for (const p of problems.slice(0, 20)) console.log(`  ${p}`);
    if (problems.length) failed++;
  } finally {
    rmSync(ctx, { recursive: true, force: true });
    for (const kind of ["real", "skel"]) {
      try {
        buildah("rmi", `localhost/skeleton-${kind}-${c.name}`);
      } catch {
        // not built
      }
    }
  }
}
process.exitCode = failed ? 1 : 0;

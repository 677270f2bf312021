// Build records: one small JSON file per build on the volume, all of them indexed in memory.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { clone, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { BuildSchema, type Build } from "../gen/kiln/v1/builder_pb.js";
import { writeFileAtomic } from "../util/fs-atomic.js";

export class RecordStore {
  private readonly byId = new Map<string, Build>();
  private readonly writes = new Map<string, Promise<void>>();

  constructor(private readonly dir: string) {}

  /** Reads every record on the volume; a torn or foreign file is skipped and reported. */
  async load(onBadFile: (file: string, err: unknown) => void): Promise<Build[]> {
    const files = (await readdir(this.dir)).filter((f) => f.endsWith(".json"));
    const loaded = await Promise.all(
      files.map(async (f) => {
        try {
          const b = fromJsonString(BuildSchema, await readFile(join(this.dir, f), "utf8"), { ignoreUnknownFields: true });
          return b.id ? b : undefined;
        } catch (e) {
          onBadFile(f, e);
          return undefined;
        }
      }),
    );
    for (const b of loaded) if (b) this.byId.set(b.id, b);
    return [...this.byId.values()];
  }

  get(id: string): Build | undefined {
    const b = this.byId.get(id);
    return b && clone(BuildSchema, b);
  }

  /** Newest first (ids are time-ordered). */
  list(project?: string, limit = 0): Build[] {
    const ids = [...this.byId.keys()].sort().reverse();
    const out: Build[] = [];
    for (const id of ids) {
      const b = this.byId.get(id)!;
      if (project && b.project !== project) continue;
      out.push(clone(BuildSchema, b));
      if (limit > 0 && out.length >= limit) break;
    }
    return out;
  }

  /** Stores a snapshot; writes of one build are serialised so an older state never wins. */
  save(build: Build): Promise<void> {
    const snapshot = clone(BuildSchema, build);
    this.byId.set(snapshot.id, snapshot);
    const json = toJsonString(BuildSchema, snapshot, { prettySpaces: 0 });
    const prev = this.writes.get(snapshot.id) ?? Promise.resolve();
    const next = prev.then(() => writeFileAtomic(join(this.dir, `${snapshot.id}.json`), json));
    const tracked = next.catch(() => {});
    this.writes.set(snapshot.id, tracked);
    void tracked.then(() => {
      if (this.writes.get(snapshot.id) === tracked) this.writes.delete(snapshot.id);
    });
    return next;
  }

  /** Waits for every pending write (shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.writes.values()]);
  }
}

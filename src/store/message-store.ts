// Records on disk: one small protobuf-JSON file per record (a build, a deployment), all of them
// indexed in memory. Ids are time-ordered, so sorting them sorts the records by age.
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { clone, fromJsonString, toJsonString, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { writeFileAtomic } from "../util/fs-atomic.js";

interface Keyed {
  id: string;
  project: string;
}

export class MessageStore<S extends DescMessage, M extends MessageShape<S> & Keyed = MessageShape<S> & Keyed> {
  private readonly byId = new Map<string, M>();
  private readonly writes = new Map<string, Promise<void>>();

  constructor(
    private readonly schema: S,
    private readonly dir: string,
  ) {}

  /** Reads every record on the volume; a torn or foreign file is skipped and reported. */
  async load(onBadFile: (file: string, err: unknown) => void): Promise<M[]> {
    const files = (await readdir(this.dir)).filter((f) => f.endsWith(".json"));
    const loaded = await Promise.all(
      files.map(async (f) => {
        try {
          const b = fromJsonString(this.schema, await readFile(join(this.dir, f), "utf8"), { ignoreUnknownFields: true }) as M;
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

  get(id: string): M | undefined {
    const b = this.byId.get(id);
    return b && (clone(this.schema, b) as M);
  }

  /** Newest first (ids are time-ordered). */
  list(project?: string, limit = 0): M[] {
    const ids = [...this.byId.keys()].sort().reverse();
    const out: M[] = [];
    for (const id of ids) {
      const b = this.byId.get(id)!;
      if (project && b.project !== project) continue;
      out.push(clone(this.schema, b) as M);
      if (limit > 0 && out.length >= limit) break;
    }
    return out;
  }

  /** Stores a snapshot; writes of one build are serialised so an older state never wins. */
  save(record: M): Promise<void> {
    const snapshot = clone(this.schema, record) as M;
    this.byId.set(snapshot.id, snapshot);
    const json = toJsonString(this.schema, snapshot, { prettySpaces: 0 });
    const prev = this.writes.get(snapshot.id) ?? Promise.resolve();
    const next = prev.then(() => writeFileAtomic(join(this.dir, `${snapshot.id}.json`), json));
    const tracked = next.catch(() => {});
    this.writes.set(snapshot.id, tracked);
    void tracked.then(() => {
      if (this.writes.get(snapshot.id) === tracked) this.writes.delete(snapshot.id);
    });
    return next;
  }

  get size(): number {
    return this.byId.size;
  }

  /**
   * Removes the project's records beyond its newest `keep` among those done() says are finished
   * (a live one is never removed); returns the ids removed.
   */
  async trim(project: string, keep: number, done: (record: M) => boolean): Promise<string[]> {
    const finished = [...this.byId.values()].filter((r) => r.project === project && done(r)).sort((a, b) => (a.id < b.id ? 1 : -1));
    const doomed = finished.slice(keep).map((r) => r.id);
    for (const id of doomed) {
      this.byId.delete(id);
      await this.writes.get(id);
      await rm(join(this.dir, `${id}.json`), { force: true });
    }
    return doomed;
  }

  /** Waits for every pending write (shutdown). */
  async flush(): Promise<void> {
    await Promise.all([...this.writes.values()]);
  }
}

// execa, loaded on first use. Importing it costs about a tenth of a second, a third of kilnd's
// start-up before this change: kilnd answers its first RPC without it and loads it right after.
import type { execa as Execa } from "execa";

let loading: Promise<typeof Execa> | undefined;

export function loadExeca(): Promise<typeof Execa> {
  loading ??= import("execa").then((m) => m.execa);
  return loading;
}

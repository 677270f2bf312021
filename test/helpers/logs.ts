// Following a build's log until a line shows up.
import type { Client } from "@connectrpc/connect";
import type { BuilderService } from "../../src/gen/kiln/v1/builder_pb.js";

/** Follows the log until a line containing text (with exact, a line that is text) shows up. */
export async function waitForLine(client: Client<typeof BuilderService>, buildId: string, text: string, timeoutMs = 60_000, exact = false): Promise<void> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    for await (const m of client.streamLogs({ buildId, follow: true }, { signal: ac.signal })) {
      if (m.event.case === "line" && (exact ? m.event.value.text === text : m.event.value.text.includes(text))) return;
    }
    throw new Error(`build ${buildId} ended without printing ${JSON.stringify(text)}`);
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

/** A finished build's log lines. */
export async function logLines(k: { client: Client<typeof BuilderService> }, buildId: string): Promise<string[]> {
  const lines: string[] = [];
  for await (const m of k.client.streamLogs({ buildId, follow: false })) {
    if (m.event.case === "line") lines.push(m.event.value.text);
  }
  return lines;
}

/** A finished build's whole log, one line per log line. */
export async function logText(k: { client: Client<typeof BuilderService> }, buildId: string): Promise<string> {
  return (await logLines(k, buildId)).join("\n");
}

// A machine driver wakes a project's builder machine, says where its kilnd answers, and tells
// when the machine is asleep again.
import { KilnError } from "../../errors/kiln-error.js";

export interface MachineDriver {
  /** Starts the machine if it sleeps; resolves with kilnd's base URL once kilnd answers. */
  wake(): Promise<string>;
  /** Resolves true once the machine is asleep (kilnd exited, the machine stopped), false on timeout. */
  waitAsleep(timeoutMs: number): Promise<boolean>;
  /** The scheduler is stopping. */
  close(): Promise<void>;
}

/** A wake that will not succeed by trying again (bad credentials, no such machine): not retried. */
export const permanentWakeError = (message: string) => new KilnError("failed_precondition", message);

export const isPermanentWakeError = (e: unknown) => e instanceof KilnError && e.code === "failed_precondition";

/** Polls kilnd's /healthz until it answers 200. */
export async function waitForKilnd(baseUrl: string, timeoutMs: number, isGone: () => boolean = () => false): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (isGone()) throw new Error("kilnd exited while starting");
    if (Date.now() > deadline) throw new Error(`kilnd at ${baseUrl} did not answer within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

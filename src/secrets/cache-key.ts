// A secret's part in the layer cache, without storing the secret: HMAC-SHA256 of its id and
// value under a key kept on the volume (made once, mode 0600). The same value gives the same
// digest, so a RUN step that mounts it stays cached; a new value gives a new one, so it runs
// again. The digest reveals nothing of the value without the key.
import { createHmac, randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

export type SecretDigester = (id: string, value: string) => string;

export async function loadSecretDigester(keyFile: string): Promise<SecretDigester> {
  let key: Buffer;
  try {
    key = await readFile(keyFile);
    if (key.length < 32) throw new Error("short key");
  } catch {
    await mkdir(dirname(keyFile), { recursive: true });
    key = randomBytes(32);
    try {
      await writeFile(keyFile, key, { mode: 0o600, flag: "wx" });
    } catch {
      key = await readFile(keyFile); // made by a concurrent start: use that one
    }
  }
  return (id, value) => createHmac("sha256", key).update(id).update("\0").update(value).digest("hex").slice(0, 16);
}

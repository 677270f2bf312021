// The runtime spec of a RUN step kiln runs itself, made to match what buildah gives a RUN step
// on this machine (checked by running both: `id`, `env`, the capability sets, /dev): the user
// resolved in the image's /etc/passwd and /etc/group as buildah resolves it, HOME from there or
// "/", HOSTNAME, the default capabilities of containers.conf, the host's network (kilnd's
// --build-network host), /etc/hosts, /etc/resolv.conf and /etc/hostname bound from the bundle,
// /run/.containerenv. What differs: no seccomp filter (buildah applies its default profile).
import { lstatSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { FastPathRefused } from "./refused.js";

export interface RunUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// containers.conf's default_capabilities (buildah's RUN shows CapEff 00000000800405fb).
const CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"];

/** Mount points buildah binds over; when the image lacks one, buildah creates it in the step's layer and kiln does not. */
export const MOUNT_POINTS: [string, "dir" | "file"][] = [
  ["proc", "dir"],
  ["sys", "dir"],
  ["dev", "dir"],
  ["etc/hosts", "file"],
  ["etc/resolv.conf", "file"],
  ["etc/hostname", "file"],
];

/** Refuses a root filesystem whose mount points buildah would have to create (or that are symlinks). */
export function checkMountPoints(rootfs: string): void {
  for (const [path, kind] of MOUNT_POINTS) {
    const st = lstatOrUndefined(join(rootfs, path));
    if (!st || st.isSymbolicLink() || (kind === "dir" ? !st.isDirectory() : !st.isFile())) {
      throw new FastPathRefused(`the image has no plain /${path} (buildah would create it in the RUN step's layer)`);
    }
  }
  // /run/.containerenv is looked up through /run: a symlink there could lead out of the image.
  if (lstatOrUndefined(join(rootfs, "run"))?.isSymbolicLink()) throw new FastPathRefused("/run in the image is a symlink");
}

/**
 * USER as buildah resolves it in the image: a name or uid from /etc/passwd (its group, its
 * supplementary groups from /etc/group, its home); a uid not there runs with gid 0 and HOME "/";
 * "user:group" takes that group alone.
 */
export function resolveUser(rootfs: string, spec: string): RunUser {
  const [userPart = "", groupPart] = spec.trim().split(":", 2) as [string, string | undefined];
  const passwd = table(rootfs, "etc/passwd");
  const groups = table(rootfs, "etc/group");
  // No USER is root, which needs no /etc/passwd (an image without one runs it as 0:0, HOME "/").
  const name = userPart === "" || (userPart === "root" && !passwd.some((p) => p[0] === "root")) ? "0" : userPart;
  const entry = /^\d+$/.test(name) ? passwd.find((p) => p[2] === name) : passwd.find((p) => p[0] === name);
  if (!entry && !/^\d+$/.test(name)) throw new FastPathRefused(`USER ${spec}: no user ${name} in the image's /etc/passwd`);
  const uid = Number(entry?.[2] ?? name);
  const home = entry?.[5] || "/";
  if (groupPart !== undefined && groupPart !== "") {
    const g = /^\d+$/.test(groupPart) ? groupPart : groups.find((x) => x[0] === groupPart)?.[2];
    if (g === undefined) throw new FastPathRefused(`USER ${spec}: no group ${groupPart} in the image's /etc/group`);
    return { uid, gid: Number(g), additionalGids: [], home };
  }
  const gid = Number(entry?.[3] ?? 0);
  const login = entry?.[0];
  const extra = login ? groups.filter((g) => (g[3] ?? "").split(",").includes(login)).map((g) => Number(g[2])) : [];
  return { uid, gid, additionalGids: [...new Set([gid, ...extra])].filter((g) => Number.isInteger(g)), home };
}

/** An image's environment ("K=V" entries) by name, in order. */
export function envMap(env: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const kv of env) {
    const eq = kv.indexOf("=");
    if (eq > 0) out.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return out;
}

/** A RUN step's environment: the image's and the ENV steps', the ARG values no ENV sets, PATH and HOME when missing, HOSTNAME. */
export function runEnv(imageEnv: readonly string[], set: readonly [string, string][], args: readonly [string, string][], user: RunUser, hostname: string): string[] {
  const env = envMap(imageEnv);
  for (const [k, v] of set) env.set(k, v);
  for (const [k, v] of args) if (!env.has(k)) env.set(k, v);
  if (!env.has("PATH")) env.set("PATH", DEFAULT_PATH);
  if (!env.has("HOME")) env.set("HOME", user.home);
  env.set("HOSTNAME", hostname);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

export interface SpecInput {
  rootfs: string;
  /** The process: the shell and the command, or an exec-form RUN's words. */
  args: string[];
  cwd: string;
  env: string[];
  user: RunUser;
  hostname: string;
  /** Files in the bundle bound over the image's. */
  hosts: string;
  resolvConf: string;
  hostnameFile: string;
  containerEnv: string;
  /** RUN --mount=type=cache directories: bound read-write at their targets, as buildah binds them. */
  caches?: { source: string; target: string }[];
  /** RUN --mount=type=secret files (on tmpfs): bound read-only at their targets, as buildah binds them. */
  secrets?: { source: string; target: string }[];
}

export function runtimeSpec(s: SpecInput): object {
  const bind = (source: string, destination: string) => ({ destination, type: "bind", source, options: ["rbind", "rprivate", "nosuid", "nodev", "noexec"] });
  return {
    ociVersion: "1.0.2",
    root: { path: s.rootfs, readonly: false },
    hostname: s.hostname,
    process: {
      terminal: false,
      args: s.args,
      cwd: s.cwd,
      env: s.env,
      user: { uid: s.user.uid, gid: s.user.gid, additionalGids: s.user.additionalGids },
      capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS },
      noNewPrivileges: false,
    },
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      bind(s.hosts, "/etc/hosts"),
      bind(s.resolvConf, "/etc/resolv.conf"),
      bind(s.hostnameFile, "/etc/hostname"),
      bind(s.containerEnv, "/run/.containerenv"),
      ...(s.caches ?? []).map((c) => ({ destination: c.target, type: "bind", source: c.source, options: ["bind", "rprivate", "rw"] })),
      ...(s.secrets ?? []).map((c) => ({ destination: c.target, type: "bind", source: c.source, options: ["bind", "rprivate", "ro"] })),
    ],
    linux: {
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "cgroup" }],
      maskedPaths: ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/fs/selinux", "/sys/dev/block"],
      readonlyPaths: ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}

/**
 * A mount's target in the image: every part of the way to it there is must be a plain directory
 * (no symlink), and the target itself, if there, a directory (a cache mount's) or a regular file
 * (a secret's); what is missing runc makes, as it does for buildah.
 */
export function checkMountTarget(rootfs: string, target: string, kind: "directory" | "file"): void {
  const parts = target.split("/").filter(Boolean);
  for (let n = 1; n <= parts.length; n++) {
    const st = lstatOrUndefined(join(rootfs, ...parts.slice(0, n)));
    if (!st) return;
    const plain = n < parts.length || kind === "directory" ? st.isDirectory() : st.isFile();
    if (st.isSymbolicLink() || !plain) throw new FastPathRefused(`the mount's target ${target} is not a plain ${kind} under plain directories in the image`);
  }
}

/**
 * After the step, buildah removes each mount's target from the rootfs (copier.Remove, whatever
 * the image had there): the directories runc made above it stay, and a target the image had
 * becomes a whiteout in the step's layer. kiln removes it the same way, through the step's
 * overlay. The step may have put a symlink on the way: then kiln cannot be sure, and refuses.
 */
export function removeMountTarget(rootfs: string, target: string): void {
  const parts = target.split("/").filter(Boolean);
  for (let n = 1; n < parts.length; n++) {
    const st = lstatOrUndefined(join(rootfs, ...parts.slice(0, n)));
    if (!st || st.isSymbolicLink() || !st.isDirectory()) throw new FastPathRefused(`after the RUN, the way to its mount's target ${target} is not plain directories`);
  }
  rmSync(join(rootfs, ...parts), { recursive: true, force: true });
}

/** A colon-separated table of the image's (missing: empty); a symlink could lead out of the image: refused. */
function table(rootfs: string, path: string): string[][] {
  for (const p of ["etc", path]) {
    const st = lstatOrUndefined(join(rootfs, p));
    if (st?.isSymbolicLink()) throw new FastPathRefused(`/${p} in the image is a symlink`);
  }
  let text: string;
  try {
    text = readFileSync(join(rootfs, path), "utf8");
  } catch {
    return [];
  }
  return text
    .split("\n")
    .filter((l) => l.trim() && !l.startsWith("#"))
    .map((l) => l.split(":"));
}

function lstatOrUndefined(path: string) {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

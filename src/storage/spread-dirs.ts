// Where the volume's new files land. Our machines' volume is ext4 without a journal, and there
// ext4 prefers not to reuse an inode freed in the last minute: every file it creates scans its
// block group's free inodes and looks up each one's inode table block (fs/ext4/ialloc.c,
// find_inode_bit and recently_deleted). After a reset or a prune has deleted thousands of files,
// the next build's files are created in those same groups (a file goes to its directory's
// group, a directory near its parent), and each creation scans the thousands just freed: the
// base image's unpack took 1.0-1.8 s on a quiet volume and 3-4 s right after a deletion (perf:
// the time in recently_deleted, under ext4_create and ext4_mkdir).
//
// ext4's top-directory flag (chattr +T) makes the allocator place each new subdirectory of a
// directory the way it places the root's: in a group with few directories and many free inodes
// (the Orlov allocator), from a random start, so a build's new trees start in groups of their own
// instead of the ones just emptied. The flag is a placement hint, nothing else: no file's
// contents or metadata change. kilnd sets it on the directories whose subdirectories are the
// large new trees (unpacked layers, storage's layers, builds' working directories, checkouts,
// cache mounts). The fast path's snapshots are renamed from builds' directories: no new inodes.
// On a filesystem that has no such flag chattr fails and nothing changes.
import { mkdir } from "node:fs/promises";
import { exec, errorSummary } from "../process/exec.js";

/**
 * Marks each directory (made if missing) as a top directory for ext4's allocator. Returns why
 * not when the filesystem refused (not ext4, no chattr), for the log; never throws for that.
 */
export async function spreadDirectories(dirs: readonly string[], env: Record<string, string>): Promise<string | undefined> {
  await Promise.all(dirs.map((d) => mkdir(d, { recursive: true })));
  const r = await exec("chattr", ["+T", "--", ...dirs], { env, timeoutMs: 10_000 }).catch((e: Error) => e);
  if (r instanceof Error) return r.message;
  return r.exitCode === 0 ? undefined : errorSummary(r);
}

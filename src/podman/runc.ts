// RUN steps live outside podman's process tree, in runc containers whose bundle buildah makes
// under TMPDIR. kiln gives every build its own TMPDIR, so a build's containers are found by
// their bundle path and stopped with runc directly: killing podman alone leaves them running.
import { cli } from "./cli.js";

/** Kills (and, with remove, deletes) every runc container whose bundle lies under dir. */
export async function killContainersUnder(dir: string, env: Record<string, string>, remove: boolean): Promise<number> {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const mine = (await cli.runcList(env)).filter((c) => c.bundle.startsWith(prefix));
  await Promise.all(
    mine.map(async (c) => {
      if (c.status === "running" || c.status === "paused" || c.status === "created") {
        await cli.runcKill(env, c.id);
      }
      if (remove) await cli.runcDelete(env, c.id);
    }),
  );
  return mine.length;
}

// Takes a POSIX write lock (fcntl F_SETLKW, whole file: what containers/storage's lockfile takes,
// so buildah waits for it and kiln for buildah) on each file named before "--", then becomes the
// command, which holds the locks until it exits ($^F: the lock files stay open across exec).
// perl is in Debian's essential set; struct flock is packed as on x86-64 and arm64 Linux.
const LOCKED_EXEC = [
  "use Fcntl; $^F = 1 << 20; my @held;",
  'while (@ARGV && $ARGV[0] ne "--") { my $p = shift; open(my $f, ">>", $p) or die "kiln: open $p: $!\\n";',
  '  my $l = pack("ssx4qqix4", F_WRLCK, 0, 0, 0, 0); fcntl($f, F_SETLKW, $l) or die "kiln: lock $p: $!\\n"; push @held, $f }',
  'shift; exec { $ARGV[0] } @ARGV or die "kiln: exec $ARGV[0]: $!\\n";',
].join("\n");

/** The command line of `runc <args>` that holds buildah's cache-mount locks (the files given) while it runs. */
export function runcCommand(args: string[], locks: readonly string[]): { file: string; args: string[] } {
  return locks.length === 0 ? { file: "runc", args } : { file: "perl", args: ["-e", LOCKED_EXEC, ...locks, "--", "runc", ...args] };
}

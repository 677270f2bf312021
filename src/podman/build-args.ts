// The podman build command line for one build: no shell, every value its own argument, and '--'
// before the context so nothing from a request can be read as an option.
export interface PodmanBuildInput {
  containerfile: string;
  contextDir: string;
  tag: string;
  labels: Record<string, string>;
  buildArgs: Record<string, string>;
  target?: string;
  iidFile: string;
  network: string;
}

export function podmanBuildArgs(b: PodmanBuildInput): string[] {
  const args = ["build", "--layers", "--pull=missing", "--file", b.containerfile, "--tag", b.tag, "--iidfile", b.iidFile];
  if (b.network) args.push(`--network=${b.network}`);
  for (const [k, v] of Object.entries(b.labels)) args.push("--label", `${k}=${v}`);
  for (const [k, v] of Object.entries(b.buildArgs)) args.push("--build-arg", `${k}=${v}`);
  if (b.target) args.push("--target", b.target);
  args.push("--", b.contextDir);
  return args;
}

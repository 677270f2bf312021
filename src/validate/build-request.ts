// Turns a BuildRequest into a BuildSpec, or refuses it with InvalidArgument naming the field.
import type { BuildRequest } from "../gen/kiln/v1/builder_pb.js";
import { invalidArgument } from "../errors/kiln-error.js";
import { parseGitUrl, type GitUrl } from "../git/url.js";
import { parseImageRepo, type ImageRepo } from "./image-ref.js";
import { checkRepoPath } from "./repo-path.js";

export const PROJECT_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const COMMIT_PATTERN = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const ARG_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const TARGET = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MAX_ARGS = 64;
const MAX_ARG_VALUE = 8192;

export interface BuildSpec {
  project: string;
  git: GitUrl;
  commit: string;
  /** Repository-relative; undefined means Containerfile, else Dockerfile. */
  containerfile?: string;
  context: string;
  image: ImageRepo;
  buildArgs: Record<string, string>;
  target?: string;
}

export function checkProject(value: string, field = "project"): string {
  if (!value) throw invalidArgument(field, "is required");
  if (!PROJECT_PATTERN.test(value)) {
    throw invalidArgument(field, `${JSON.stringify(value.slice(0, 80))} is not a project name (1-63 of a-z 0-9 . _ -, starting with a letter or digit)`);
  }
  return value;
}

export function validateBuildRequest(req: BuildRequest): BuildSpec {
  const project = checkProject(req.project);
  if (req.source?.kind.case !== "git") throw invalidArgument("source.git", "is required");
  const src = req.source.kind.value;
  const git = parseGitUrl(src.url);
  if (!src.commit) throw invalidArgument("source.git.commit", "is required");
  if (!COMMIT_PATTERN.test(src.commit)) {
    throw invalidArgument("source.git.commit", `${JSON.stringify(src.commit.slice(0, 80))} is not a full commit SHA (40 lowercase hex digits)`);
  }
  const containerfile = req.containerfile ? checkRepoPath(req.containerfile, "containerfile") : undefined;
  const context = req.context ? checkRepoPath(req.context, "context") : ".";
  const image = parseImageRepo(req.image || `localhost/kiln/${project}`);

  const names = Object.keys(req.buildArgs);
  if (names.length > MAX_ARGS) throw invalidArgument("build_args", `has more than ${MAX_ARGS} entries`);
  const buildArgs: Record<string, string> = {};
  for (const name of names) {
    const value = req.buildArgs[name] ?? "";
    if (!ARG_NAME.test(name)) throw invalidArgument(`build_args[${JSON.stringify(name.slice(0, 80))}]`, "is not a valid build argument name");
    if (value.length > MAX_ARG_VALUE) throw invalidArgument(`build_args[${name}]`, `is longer than ${MAX_ARG_VALUE} characters`);
    if (/[\r\n\x00]/.test(value)) throw invalidArgument(`build_args[${name}]`, "must not contain a newline or NUL");
    buildArgs[name] = value;
  }
  if (req.target && !TARGET.test(req.target)) throw invalidArgument("target", `${JSON.stringify(req.target.slice(0, 80))} is not a stage name`);

  const spec: BuildSpec = { project, git, commit: src.commit, context, image, buildArgs };
  if (containerfile) spec.containerfile = containerfile;
  if (req.target) spec.target = req.target;
  return spec;
}

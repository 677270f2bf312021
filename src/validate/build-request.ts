// Turns a BuildRequest into a BuildSpec, or refuses it with InvalidArgument naming the field.
import type { BuildRequest, CompareCommitsRequest } from "../gen/kiln/v1/builder_pb.js";
import { invalidArgument } from "../errors/kiln-error.js";
import { parseGitUrl, withCredentials, type GitUrl } from "../git/url.js";
import { MIN_SECRET_LENGTH } from "../secrets/masker.js";
import { parseImageRepo, type ImageRepo } from "./image-ref.js";
import { checkRepoPath } from "./repo-path.js";

export const PROJECT_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** A full commit id: SHA-1 (40 hex) or SHA-256 (64 hex) repositories; kilnd and the scheduler take the same. */
export const COMMIT_PATTERN = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const ARG_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const TARGET = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MAX_ARGS = 64;
const MAX_ARG_VALUE = 8192;
const SECRET_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const MAX_SECRETS = 32;
const MAX_SECRET_BYTES = 64 * 1024;
// host[:port] and an optional repository prefix, as containers-auth.json keys are written.
const REGISTRY_KEY = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?(?:\/[a-z0-9._\/-]+)?$/;
const MAX_CREDENTIALS = 16;

export interface RegistryCredentialSpec {
  registry: string;
  username: string;
  password: string;
}

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
  /** Build secrets, id -> value (RUN --mount=type=secret,id=ID). */
  secrets: Record<string, string>;
  registryCredentials: RegistryCredentialSpec[];
  /** BuildRequest.request_key: the same key again is the same build. */
  requestKey?: string;
}

const REQUEST_KEY = /^[A-Za-z0-9][A-Za-z0-9._:\/-]{0,127}$/;

export function checkProject(value: string, field = "project"): string {
  if (!value) throw invalidArgument(field, "is required");
  if (!PROJECT_PATTERN.test(value)) {
    throw invalidArgument(field, `${JSON.stringify(value.slice(0, 80))} is not a project name (1-63 of a-z 0-9 . _ -, starting with a letter or digit)`);
  }
  return value;
}

export function checkCommit(value: string, field: string): string {
  if (!value) throw invalidArgument(field, "is required");
  if (!COMMIT_PATTERN.test(value)) throw invalidArgument(field, `${JSON.stringify(value.slice(0, 80))} is not a full commit SHA (40 or 64 lowercase hex digits)`);
  return value;
}

export interface CompareSpec {
  project: string;
  git: GitUrl;
  base: string;
  head: string;
}

export function validateCompareRequest(req: CompareCommitsRequest): CompareSpec {
  const project = checkProject(req.project);
  if (!req.source) throw invalidArgument("source", "is required");
  const git = withCredentials(parseGitUrl(req.source.url, "source.url"), req.source.username, req.source.password, "source");
  return { project, git, head: checkCommit(req.source.commit, "source.commit"), base: checkCommit(req.base, "base") };
}

export function validateBuildRequest(req: BuildRequest): BuildSpec {
  const project = checkProject(req.project);
  if (req.source?.kind.case !== "git") throw invalidArgument("source.git", "is required");
  const src = req.source.kind.value;
  const git = withCredentials(parseGitUrl(src.url), src.username, src.password);
  checkCommit(src.commit, "source.git.commit");
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

  const spec: BuildSpec = { project, git, commit: src.commit, context, image, buildArgs, secrets: checkSecrets(req.secrets), registryCredentials: checkCredentials(req.registryCredentials) };
  if (containerfile) spec.containerfile = containerfile;
  if (req.target) spec.target = req.target;
  if (req.requestKey) {
    if (!REQUEST_KEY.test(req.requestKey)) throw invalidArgument("request_key", `${JSON.stringify(req.requestKey.slice(0, 80))} is not a request key (1-128 of A-Z a-z 0-9 . _ : / -)`);
    spec.requestKey = req.requestKey;
  }
  return spec;
}

// Errors name the id or registry, never a value.
function checkSecrets(secrets: Record<string, string>): Record<string, string> {
  const ids = Object.keys(secrets);
  if (ids.length > MAX_SECRETS) throw invalidArgument("secrets", `has more than ${MAX_SECRETS} entries`);
  const out: Record<string, string> = {};
  for (const id of ids) {
    const field = `secrets[${JSON.stringify(id.slice(0, 80))}]`;
    if (!SECRET_ID.test(id)) throw invalidArgument(field, "is not a secret id (1-64 of A-Z a-z 0-9 _ -, starting with a letter or digit)");
    const value = secrets[id] ?? "";
    if (Buffer.byteLength(value) > MAX_SECRET_BYTES) throw invalidArgument(field, `is larger than ${MAX_SECRET_BYTES / 1024} KiB`);
    // A value this short could not be masked in the log without masking everything else.
    if (value.length < MIN_SECRET_LENGTH) throw invalidArgument(field, `is shorter than ${MIN_SECRET_LENGTH} characters`);
    out[id] = value;
  }
  return out;
}

function checkCredentials(list: readonly { registry: string; username: string; password: string }[]): RegistryCredentialSpec[] {
  if (list.length > MAX_CREDENTIALS) throw invalidArgument("registry_credentials", `has more than ${MAX_CREDENTIALS} entries`);
  const seen = new Set<string>();
  return list.map((c, i) => {
    const field = `registry_credentials[${i}]`;
    if (!REGISTRY_KEY.test(c.registry)) throw invalidArgument(`${field}.registry`, `${JSON.stringify(c.registry.slice(0, 80))} is not HOST[:PORT][/REPOSITORY-PREFIX]`);
    if (seen.has(c.registry)) throw invalidArgument(`${field}.registry`, `${c.registry} is given twice`);
    seen.add(c.registry);
    if (!c.username || c.username.length > 256 || /[:\r\n\x00]/.test(c.username)) throw invalidArgument(`${field}.username`, "is required: up to 256 characters, no ':' or newline");
    if (!c.password || c.password.length > 8192 || /[\r\n\x00]/.test(c.password)) throw invalidArgument(`${field}.password`, "is required: up to 8192 characters, no newline");
    if (c.password.length < MIN_SECRET_LENGTH) throw invalidArgument(`${field}.password`, `is shorter than ${MIN_SECRET_LENGTH} characters`);
    return { registry: c.registry, username: c.username, password: c.password };
  });
}

// Git URLs kiln accepts, and their redaction: credentials never reach a log, a record or an error.
import { invalidArgument } from "../errors/kiln-error.js";

const SCHEMES = new Set(["https:", "http:", "ssh:", "git:", "file:"]);
// user@host:path, git's scp-like ssh form. The host part excludes ':' so "ext::..." never matches.
const SCP_LIKE = /^[A-Za-z0-9._~-]+@[A-Za-z0-9.-]+:(?!\/\/)[^\s]+$/;
const MAX_URL = 2048;

export interface GitUrl {
  /** What git is given: never with credentials in it (argv is readable by every process). */
  raw: string;
  /** Credentials for an http(s) URL, from the URL's userinfo or the request; git gets them from its environment (git/env.ts). */
  credentials?: { username: string; password: string };
  /** Safe to log and record. */
  redacted: string;
  /** Strings to mask wherever git's output echoes them. */
  secrets: string[];
  /** For file:// URLs, the local path (its existence is checked before fetching). */
  localPath?: string;
}

export function parseGitUrl(value: string, field = "source.git.url"): GitUrl {
  if (!value) throw invalidArgument(field, "is required");
  if (value.length > MAX_URL) throw invalidArgument(field, `is longer than ${MAX_URL} characters`);
  if (value.startsWith("-")) throw invalidArgument(field, "must not start with '-'");
  if (/[\s\x00-\x1f\x7f]/.test(value)) throw invalidArgument(field, "contains whitespace or control characters");
  if (SCP_LIKE.test(value)) return { raw: value, redacted: value, secrets: [] };
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalidArgument(field, "is not a URL (use https://, http://, ssh://, git://, file:// or user@host:path)");
  }
  if (!SCHEMES.has(url.protocol)) {
    throw invalidArgument(field, `scheme ${JSON.stringify(url.protocol.replace(/:$/, ""))} is not allowed (https, http, ssh, git, file)`);
  }
  const secrets: string[] = [];
  const clean = new URL(url.href);
  if (url.protocol === "https:" || url.protocol === "http:") {
    // A token often travels as the user name: drop the whole userinfo.
    for (const part of [url.username, url.password]) if (part) secrets.push(part, decodeURIComponent(part));
    clean.username = "";
    clean.password = "";
  } else if (url.password) {
    secrets.push(url.password, decodeURIComponent(url.password));
    clean.password = "";
  }
  if (url.protocol === "file:") {
    if (url.host) throw invalidArgument(field, "file URLs must not name a host");
    return { raw: value, redacted: clean.href, secrets, localPath: decodeURIComponent(url.pathname) };
  }
  if (!url.hostname) throw invalidArgument(field, "names no host");
  const out: GitUrl = { raw: value, redacted: clean.href, secrets: [...new Set(secrets.filter((s) => s.length >= 3))] };
  if ((url.protocol === "https:" || url.protocol === "http:") && (url.username || url.password)) {
    out.raw = clean.href;
    out.credentials = { username: decodeURIComponent(url.username), password: decodeURIComponent(url.password) };
  }
  return out;
}

/** Credentials given beside the URL (GitSource.username/password) win over those in it. */
export function withCredentials(url: GitUrl, username: string, password: string, field = "source.git"): GitUrl {
  if (!username && !password) return url;
  if (!/^https?:/.test(url.raw)) throw invalidArgument(`${field}.password`, "credentials are for http and https URLs (ssh uses the machine's keys)");
  if (/[\r\n\x00]/.test(username) || /[\r\n\x00]/.test(password)) throw invalidArgument(`${field}.password`, "must not contain a newline or NUL");
  if (username.length > 256 || password.length > 8192) throw invalidArgument(`${field}.password`, "is too long");
  const secrets = [...url.secrets];
  if (password) secrets.push(password);
  return { ...url, credentials: { username: username || "x-access-token", password }, secrets: [...new Set(secrets.filter((s) => s.length >= 3))] };
}

// The environment git runs in: no prompts, no system config, only the transports kiln allows,
// and a repository's credentials through git's credential protocol. The credentials travel in
// this environment (readable only by kilnd's own user), never in a command line or a file: the
// helper is a shell function in GIT_CONFIG_* that prints them when git asks.
import type { GitUrl } from "./url.js";

// `credential.helper` is a list: the empty value first drops every helper configured elsewhere.
const HELPER = '!f() { test "$1" = get || exit 0; printf "username=%s\\npassword=%s\\n" "$KILN_GIT_USERNAME" "$KILN_GIT_PASSWORD"; }; f';

export function gitEnv(base: Record<string, string>, url?: Pick<GitUrl, "credentials">): Record<string, string> {
  const env: Record<string, string> = {
    ...base,
    GIT_TERMINAL_PROMPT: "0",
    GIT_CONFIG_NOSYSTEM: "1",
    // Defence in depth beside URL validation: ext:: and friends are refused by git itself.
    GIT_ALLOW_PROTOCOL: "https:http:ssh:git:file",
    GIT_PROTOCOL_FROM_USER: "0",
    GIT_SSH_COMMAND: "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
    LC_ALL: "C",
  };
  const c = url?.credentials;
  if (c) {
    Object.assign(env, {
      GIT_CONFIG_COUNT: "2",
      GIT_CONFIG_KEY_0: "credential.helper",
      GIT_CONFIG_VALUE_0: "",
      GIT_CONFIG_KEY_1: "credential.helper",
      GIT_CONFIG_VALUE_1: HELPER,
      KILN_GIT_USERNAME: c.username,
      KILN_GIT_PASSWORD: c.password,
    });
  }
  return env;
}

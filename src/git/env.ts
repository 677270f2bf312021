// The environment git runs in: no prompts, no system config, only the transports kiln allows.
export function gitEnv(base: Record<string, string>): Record<string, string> {
  return {
    ...base,
    GIT_TERMINAL_PROMPT: "0",
    GIT_CONFIG_NOSYSTEM: "1",
    // Defence in depth beside URL validation: ext:: and friends are refused by git itself.
    GIT_ALLOW_PROTOCOL: "https:http:ssh:git:file",
    GIT_PROTOCOL_FROM_USER: "0",
    GIT_SSH_COMMAND: "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
    LC_ALL: "C",
  };
}

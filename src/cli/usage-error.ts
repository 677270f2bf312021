// A mistake in how kiln was called: exit code 2 and the usage.
export class CliUsageError extends Error {}

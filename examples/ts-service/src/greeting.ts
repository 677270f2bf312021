// The one line the benchmark changes between builds.
export const greeting = (name: string): string => `hello, ${name}`;

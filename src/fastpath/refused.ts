/** The fast path cannot be sure of this build: it says why, and the full build runs. */
export class FastPathRefused extends Error {}

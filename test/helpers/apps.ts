// Small apps that tests build, on the busybox base.
import type { Files } from "./git-repo.js";

/** COPY then RUN: the second commit's change invalidates only the steps from the COPY on. */
export const helloApp = (base: string): Files => ({
  Containerfile: `FROM ${base}\nWORKDIR /app\nCOPY static/ ./static/\nRUN echo built > /app/built.txt\nCOPY src/ ./src/\nRUN cat src/*.txt > /app/message.txt\nCMD ["cat", "/app/message.txt"]\n`,
  "static/info.txt": "static\n",
  "src/a.txt": "hello from kiln's tests\n",
});

/** A RUN step that takes as long as asked: for cancel, supersede and restart tests. */
export const slowApp = (base: string, seconds = 300): Files => ({
  Containerfile: `FROM ${base}\nWORKDIR /app\nCOPY prep.txt ./\nRUN echo before-sleep && sleep ${seconds} && echo after-sleep\nCOPY src/ ./src/\n`,
  "prep.txt": "prepared\n",
  "src/a.txt": "slow\n",
});

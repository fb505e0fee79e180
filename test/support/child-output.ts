// Collects what a child process writes to stdout and stderr, for start-up checks and
// for assertions on its logs.
import type { Subprocess } from "bun";

export interface CapturedOutput {
  /** Everything written to stdout and stderr so far, interleaved as it arrived. */
  text(): string;
  /** Settles once both streams have ended. */
  readonly finished: Promise<void>;
}

export function captureOutput(child: Subprocess<"ignore", "pipe", "pipe">): CapturedOutput {
  let captured = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) captured += decoder.decode(chunk, { stream: true });
  };
  const finished = Promise.all([collect(child.stdout), collect(child.stderr)]).then(() => undefined);
  return { text: () => captured, finished };
}

// HTTP load generation: the specification and the result of one measurement, and the
// autocannon runner. Every load generator runs in a child process of its own.
import { join } from "node:path";

export type ToolName = "autocannon" | "wrk";

export interface LoadSpec {
  readonly url: string;
  readonly method: "GET" | "POST";
  readonly headers: Readonly<Record<string, string>>;
  /** Request body size; the body is that many "a" bytes. 0 sends no body. */
  readonly bodyBytes: number;
  readonly connections: number;
  readonly durationSeconds: number;
  readonly timeoutSeconds: number;
}

export interface LoadResult {
  readonly tool: ToolName;
  readonly requests: number;
  readonly durationSeconds: number;
  readonly requestsPerSecond: number;
  readonly bytesPerSecond: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  /** Responses by status code; wrk can only tell 2xx/3xx from 4xx/5xx. */
  readonly statusCounts: Readonly<Record<string, number>>;
  readonly errors: number;
  readonly timeouts: number;
}

const AUTOCANNON_CLIENT = join(import.meta.dir, "autocannon-client.mjs");

/** Node.js runs autocannon when it is installed; Bun otherwise. */
export function autocannonRuntime(): string {
  return Bun.which("node") ?? process.execPath;
}

/** Runs autocannon in a child process and kills it if it overruns the duration by 60 s. */
export async function runAutocannon(spec: LoadSpec): Promise<LoadResult> {
  const child = Bun.spawn([autocannonRuntime(), AUTOCANNON_CLIENT, JSON.stringify(spec)], {
    stdout: "pipe",
    stderr: "pipe",
    cwd: join(import.meta.dir, "..", ".."),
  });
  const guard = setTimeout(() => child.kill("SIGKILL"), (spec.durationSeconds + 60) * 1000);
  const [output, errorText, exitCode] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  clearTimeout(guard);
  if (exitCode !== 0) throw new Error(`autocannon failed with exit status ${exitCode}: ${errorText}`);
  return JSON.parse(output.trim().split("\n").at(-1)!) as LoadResult;
}

// One wrk measurement: runs the `wrk` executable (written in C, so it needs far less CPU
// per request than autocannon) and parses its text report.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LoadSpec, LoadResult } from "./load.ts";

/** Path of wrk, or null when it is not installed (Debian package `wrk`). */
export function findWrk(): string | null {
  return Bun.which("wrk");
}

/** Converts a wrk duration such as "812.00us", "1.25ms" or "2.01s" to milliseconds. */
function toMilliseconds(text: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (match === null) throw new Error(`wrk: unexpected latency "${text}"`);
  const value = Number(match[1]);
  const scale = { us: 1e-3, ms: 1, s: 1e3, m: 60e3 }[match[2] as "us" | "ms" | "s" | "m"];
  return value * scale;
}

/** Converts a wrk size such as "842.41KB" or "1.36GB" (powers of 1024) to bytes. */
function toBytes(text: string): number {
  const match = /^([\d.]+)(B|KB|MB|GB|TB)$/.exec(text);
  if (match === null) throw new Error(`wrk: unexpected size "${text}"`);
  const power = ["B", "KB", "MB", "GB", "TB"].indexOf(match[2]!);
  return Number(match[1]) * 1024 ** power;
}

/** Parses wrk's report, run with --latency. */
export function parseWrkReport(report: string, durationSeconds: number): LoadResult {
  const find = (pattern: RegExp): string => {
    const match = pattern.exec(report);
    if (match === null) throw new Error(`wrk: no match for ${pattern} in its report:\n${report}`);
    return match[1]!;
  };
  const requests = Number(find(/^\s*(\d+) requests in /m));
  const nonSuccess = Number(/Non-2xx or 3xx responses: (\d+)/.exec(report)?.[1] ?? 0);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(report);
  const [connectErrors, readErrors, writeErrors, timeouts] = (socketErrors?.slice(1) ?? ["0", "0", "0", "0"]).map(Number);
  return {
    tool: "wrk",
    requests,
    durationSeconds,
    requestsPerSecond: Number(find(/^Requests\/sec:\s+([\d.]+)/m)),
    bytesPerSecond: toBytes(find(/^Transfer\/sec:\s+(\S+)/m)),
    latencyMs: {
      p50: toMilliseconds(find(/^\s+50%\s+(\S+)/m)),
      p99: toMilliseconds(find(/^\s+99%\s+(\S+)/m)),
      max: toMilliseconds(find(/^\s+Latency\s+\S+\s+\S+\s+(\S+)/m)),
    },
    // wrk only counts statuses outside 200-399, so the rest are reported as 2xx/3xx.
    statusCounts: { "2xx/3xx": requests - nonSuccess, "4xx/5xx": nonSuccess },
    errors: connectErrors! + readErrors! + writeErrors!,
    timeouts: timeouts!,
  };
}

/** Writes the Lua script that sets wrk's method, body and headers. */
function writeScript(spec: LoadSpec): string {
  const lines = [`wrk.method = ${JSON.stringify(spec.method)}`];
  for (const [name, value] of Object.entries(spec.headers)) lines.push(`wrk.headers[${JSON.stringify(name)}] = ${JSON.stringify(value)}`);
  if (spec.bodyBytes > 0) lines.push(`wrk.body = string.rep("a", ${spec.bodyBytes})`);
  const path = join(mkdtempSync(join(tmpdir(), "preauth-gate-bench-wrk-")), "request.lua");
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}

/** Runs wrk with one thread, which keeps the load generator to one CPU at most. */
export async function runWrk(wrk: string, spec: LoadSpec): Promise<LoadResult> {
  const command = [
    wrk,
    "--threads",
    "1",
    "--connections",
    String(spec.connections),
    "--duration",
    `${spec.durationSeconds}s`,
    "--timeout",
    `${spec.timeoutSeconds}s`,
    "--latency",
    "--script",
    writeScript(spec),
    spec.url,
  ];
  const child = Bun.spawn(command, { stdout: "pipe", stderr: "pipe" });
  const [report, errorText, exitCode] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  if (exitCode !== 0) throw new Error(`wrk failed with exit status ${exitCode}: ${errorText}${report}`);
  return parseWrkReport(report, spec.durationSeconds);
}

// CPU time and resident memory of a server process and its children (nginx's workers),
// read from /proc. Linux only.
import { readdirSync, readFileSync } from "node:fs";

/** Clock ticks per second of /proc/PID/stat; 100 on every mainstream Linux build (CLK_TCK). */
const CLOCK_TICKS_PER_SECOND = 100;

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/** Fields of /proc/PID/stat after the command name, which may itself contain spaces. */
function statFields(pid: number): string[] | null {
  const text = readOrNull(`/proc/${pid}/stat`);
  if (text === null) return null;
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/** Lists `pid` and every process whose parent is `pid`, one level deep. */
export function processGroup(pid: number): number[] {
  const pids = [pid];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = statFields(Number(entry));
    // Field 4 of /proc/PID/stat is the parent pid; `fields` starts at field 3 (state).
    if (fields !== null && Number(fields[1]) === pid) pids.push(Number(entry));
  }
  return pids;
}

/** User plus system CPU seconds used so far by the processes, threads included. */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const fields = statFields(pid);
    // utime and stime are fields 14 and 15.
    if (fields !== null) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / CLOCK_TICKS_PER_SECOND;
}

function statusKiB(pid: number, key: "VmRSS" | "VmHWM"): number {
  const text = readOrNull(`/proc/${pid}/status`);
  const match = text === null ? null : new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text);
  return match === null ? 0 : Number(match[1]);
}

/** Current resident memory of the processes together, in KiB. */
export function rssKiB(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + statusKiB(pid, "VmRSS"), 0);
}

/** Sum of each process's own peak resident memory (VmHWM), in KiB. */
export function peakRssKiB(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + statusKiB(pid, "VmHWM"), 0);
}

/** What a server used during one measurement. */
export interface ServerUsage {
  readonly cpuSeconds: number;
  /** Largest sampled sum of VmRSS over the process group, in KiB. */
  readonly maxRssKiB: number;
}

/**
 * Samples the process group's resident memory every `intervalMs` until `stop` is called,
 * and returns the CPU time used in between.
 */
export function startUsageSampler(pids: readonly number[], intervalMs = 100): { stop(): ServerUsage } {
  const cpuAtStart = cpuSeconds(pids);
  let maxRssKiB = rssKiB(pids);
  const timer = setInterval(() => {
    maxRssKiB = Math.max(maxRssKiB, rssKiB(pids));
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      maxRssKiB = Math.max(maxRssKiB, rssKiB(pids));
      return { cpuSeconds: cpuSeconds(pids) - cpuAtStart, maxRssKiB };
    },
  };
}

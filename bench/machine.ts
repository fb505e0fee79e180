// The machine and software versions a benchmark ran on, stored with its results.
import { readFileSync } from "node:fs";
import { availableParallelism, loadavg, release } from "node:os";
import { join } from "node:path";

export interface MachineInfo {
  readonly cpus: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly kernel: string;
  /** 1-minute load average when the run started, a hint of other work on the machine. */
  readonly loadAverageAtStart: number;
}

export interface Versions {
  readonly bun: string;
  readonly nginx: string | null;
  readonly node: string | null;
  readonly wrk: string | null;
  readonly autocannon: string;
  readonly tinybench: string;
  /** `git describe` of the checkout, with "-dirty" when it has uncommitted changes. */
  readonly gateSource: string | null;
}

const ROOT = join(import.meta.dir, "..");

export function machineInfo(): MachineInfo {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const meminfo = readFileSync("/proc/meminfo", "utf8");
  const memoryKiB = Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0);
  return {
    cpus: availableParallelism(),
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    memoryGiB: Math.round((memoryKiB / 1024 ** 2) * 10) / 10,
    kernel: release(),
    loadAverageAtStart: Math.round(loadavg()[0]! * 100) / 100,
  };
}

/** Runs a command and returns its stdout and stderr together, or null when it cannot run. */
function outputOf(command: string[]): string | null {
  if (Bun.which(command[0]!) === null && !command[0]!.startsWith("/")) return null;
  const child = Bun.spawnSync(command, { stdout: "pipe", stderr: "pipe", cwd: ROOT });
  return `${child.stdout.toString()}${child.stderr.toString()}`.trim();
}

function packageVersion(name: string): string {
  const text = readFileSync(join(ROOT, "node_modules", name, "package.json"), "utf8");
  return (JSON.parse(text) as { version: string }).version;
}

export function versions(nginxBinary: string | null): Versions {
  const nginx = nginxBinary === null ? null : outputOf([nginxBinary, "-v"]);
  const wrk = outputOf(["wrk", "--version"]);
  return {
    bun: Bun.version,
    nginx: nginx === null ? null : (/nginx\/(\S+)/.exec(nginx)?.[1] ?? nginx),
    node: outputOf(["node", "--version"]),
    wrk: wrk === null ? null : (/^wrk (\S+)/.exec(wrk)?.[1] ?? null),
    autocannon: packageVersion("autocannon"),
    tinybench: packageVersion("tinybench"),
    gateSource: outputOf(["git", "describe", "--always", "--dirty"]),
  };
}

// The summary of a run: per scenario, tool and target, the medians of the rounds that
// count, and their ratios to nginx and to the stand-in alone.
import type { TargetName } from "./targets.ts";
import type { LoadTool, Measurement } from "./measure.ts";
import { median, ratio } from "../stats.ts";

export interface SummaryRow {
  readonly scenario: string;
  readonly tool: LoadTool;
  readonly target: TargetName;
  /** Measurements without a problem; the figures are their medians. */
  readonly validRounds: number;
  readonly perSecond: number;
  /** Half the range of the rounds' rates, in percent of the median: how much they disagree. */
  readonly perSecondSpreadPercent: number;
  readonly latencyMs: { readonly p50: number; readonly p99: number };
  readonly bytesPerSecond: number | null;
  readonly cpuMicrosPerRequest: number;
  /** Largest resident memory sampled in any round, in MiB. */
  readonly maxRssMiB: number;
  readonly vsNginx: Ratios;
  readonly vsDirect: Ratios;
}

/** This row's figures divided by another target's; null where that target has no row. */
export interface Ratios {
  readonly perSecond: number | null;
  readonly p50: number | null;
  readonly p99: number | null;
  readonly cpuMicrosPerRequest: number | null;
  readonly maxRssMiB: number | null;
}

function spreadPercent(values: readonly number[]): number {
  if (values.length < 2) return 0;
  return ((Math.max(...values) - Math.min(...values)) / 2 / median(values)) * 100;
}

export function summarize(measurements: readonly Measurement[]): SummaryRow[] {
  const groups = new Map<string, Measurement[]>();
  for (const measurement of measurements) {
    const key = `${measurement.scenario}\u0000${measurement.tool}\u0000${measurement.target}`;
    groups.set(key, [...(groups.get(key) ?? []), measurement]);
  }
  type Base = Omit<SummaryRow, "vsNginx" | "vsDirect">;
  const bases: Base[] = [];
  for (const group of groups.values()) {
    const valid = group.filter((measurement) => measurement.problem === null);
    const first = group[0]!;
    const bytes = valid.map((measurement) => measurement.bytesPerSecond).filter((value): value is number => value !== null);
    bases.push({
      scenario: first.scenario,
      tool: first.tool,
      target: first.target,
      validRounds: valid.length,
      perSecond: median(valid.map((measurement) => measurement.perSecond)),
      perSecondSpreadPercent: spreadPercent(valid.map((measurement) => measurement.perSecond)),
      latencyMs: {
        p50: median(valid.map((measurement) => measurement.latencyMs.p50)),
        p99: median(valid.map((measurement) => measurement.latencyMs.p99)),
      },
      bytesPerSecond: bytes.length > 0 ? median(bytes) : null,
      cpuMicrosPerRequest: median(valid.map((measurement) => measurement.server.cpuMicrosPerRequest)),
      maxRssMiB: Math.max(...group.map((measurement) => measurement.server.maxRssKiB)) / 1024,
    });
  }
  const find = (row: Base, target: TargetName) =>
    bases.find((other) => other.scenario === row.scenario && other.tool === row.tool && other.target === target);
  const ratios = (row: Base, base: Base | undefined): Ratios => ({
    perSecond: ratio(row.perSecond, base?.perSecond),
    p50: ratio(row.latencyMs.p50, base?.latencyMs.p50),
    p99: ratio(row.latencyMs.p99, base?.latencyMs.p99),
    cpuMicrosPerRequest: ratio(row.cpuMicrosPerRequest, base?.cpuMicrosPerRequest),
    maxRssMiB: ratio(row.maxRssMiB, base?.maxRssMiB),
  });
  return bases.map((row) => ({ ...row, vsNginx: ratios(row, find(row, "nginx")), vsDirect: ratios(row, find(row, "direct")) }));
}

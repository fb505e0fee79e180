// End-to-end benchmark: starts the stand-in Mattermost, nginx and the gate on 127.0.0.1,
// then measures every scenario against every target with a load generator in its own
// process. Targets take turns in a rotating order from round to round, and the summary
// keeps the median of the rounds.
import { randomBytes } from "node:crypto";
import { autocannonRuntime, type LoadResult } from "./e2e/load.ts";
import { httpProblem, measureScenario, preflight, webSocketProblem, type LoadTool, type Measurement } from "./e2e/measure.ts";
import { peakRssKiB } from "./e2e/process-stats.ts";
import { SCENARIOS, type Scenario } from "./e2e/scenarios.ts";
import { summarize, type SummaryRow } from "./e2e/summary.ts";
import { startGate, startNginx, startUpstream, writeSecretFile, type Target, type TargetName } from "./e2e/targets.ts";
import { findWrk } from "./e2e/wrk.ts";
import type { WebSocketLoadResult } from "./e2e/ws-client.ts";

export const TARGET_ORDER: readonly TargetName[] = ["direct", "nginx", "gate"];
const PAUSE_BETWEEN_MEASUREMENTS_MS = 300;

export interface E2eOptions {
  readonly durationSeconds: number;
  readonly rounds: number;
  readonly warmupSeconds: number;
  /** Command that starts the gate, before its arguments; the compiled executable by default. */
  readonly gateCommand?: readonly string[];
  /** Scenario ids to run; all when empty. */
  readonly scenarioIds: readonly string[];
  readonly log: (line: string) => void;
}

export interface E2eResult {
  readonly scenarios: readonly Scenario[];
  readonly tools: readonly LoadTool[];
  readonly autocannonRuntime: string;
  readonly nginxWorkers: number;
  readonly measurements: readonly Measurement[];
  readonly summary: readonly SummaryRow[];
  /** Peak resident memory over the whole run (VmHWM, summed over nginx's processes), in MiB. */
  readonly peakRssMiB: Readonly<Record<TargetName, number>>;
}

/** Lists the load tools for a scenario: wrk (when installed) and autocannon for HTTP. */
function toolsFor(scenario: Scenario, wrkInstalled: boolean): LoadTool[] {
  if (scenario.kind === "websocket") return ["ws-client"];
  if (!wrkInstalled) return ["autocannon"];
  return scenario.wrkOnly ? ["wrk"] : ["wrk", "autocannon"];
}

/** Rotates the target order by the round number, so each target goes first once in three rounds. */
export function targetOrder(round: number): TargetName[] {
  const shift = round % TARGET_ORDER.length;
  return [...TARGET_ORDER.slice(shift), ...TARGET_ORDER.slice(0, shift)];
}

/**
 * Recomputes which measurements count and the summary from stored results, so that a
 * change to the rules or the report needs no new run.
 */
export function resummarize(e2e: E2eResult): E2eResult {
  const measurements = e2e.measurements.map((measurement) => {
    const scenario = e2e.scenarios.find((candidate) => candidate.id === measurement.scenario)!;
    const problem =
      scenario.kind === "websocket"
        ? webSocketProblem(scenario, measurement.load as WebSocketLoadResult)
        : httpProblem(scenario, measurement.load as LoadResult);
    return { ...measurement, problem };
  });
  return { ...e2e, measurements, summary: summarize(measurements) };
}

function describe(measurement: Measurement): string {
  const rate = measurement.perSecond.toFixed(0).padStart(7);
  const cpu = measurement.server.cpuMicrosPerRequest.toFixed(0);
  const status = measurement.problem === null ? "" : `  NOT COUNTED: ${measurement.problem}`;
  return `${rate}/s p50 ${measurement.latencyMs.p50.toFixed(2)} ms p99 ${measurement.latencyMs.p99.toFixed(2)} ms cpu ${cpu} us/req rss ${(measurement.server.maxRssKiB / 1024).toFixed(0)} MiB${status}`;
}

/** Starts the targets, runs every round and stops the targets again, also on failure. */
export async function runEndToEnd(options: E2eOptions): Promise<E2eResult> {
  const scenarios = SCENARIOS.filter((scenario) => options.scenarioIds.length === 0 || options.scenarioIds.includes(scenario.id));
  const wrkInstalled = findWrk() !== null;
  if (!wrkInstalled) options.log("wrk is not installed (Debian package wrk); measuring with autocannon only");
  const secret = randomBytes(32).toString("base64");

  const started: Target[] = [];
  const stopAll = () => Promise.all(started.map((target) => target.stop()));
  const onSignal = () => void stopAll().then(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const upstream = await startUpstream();
    started.push(upstream);
    const nginx = await startNginx(upstream.port, secret);
    started.push(nginx);
    const gate = await startGate(upstream.url, writeSecretFile(secret), options.gateCommand);
    started.push(gate);
    const targets = new Map<TargetName, Target>([
      ["direct", upstream],
      ["nginx", nginx],
      ["gate", gate],
    ]);
    options.log(`targets: direct ${upstream.url}, nginx ${nginx.url} (${nginx.pids().length - 1} workers), gate ${gate.url}`);

    await preflight(scenarios, targets, secret);
    if (options.warmupSeconds > 0) {
      options.log(`warming up each target for ${options.warmupSeconds} s per scenario`);
      for (const scenario of scenarios.filter((candidate) => candidate.kind === "http")) {
        for (const name of scenario.targets) {
          await measureScenario(scenario, targets.get(name)!, wrkInstalled ? "wrk" : "autocannon", secret, options.warmupSeconds, -1);
        }
      }
    }

    const measurements: Measurement[] = [];
    for (let round = 0; round < options.rounds; round++) {
      const order = targetOrder(round);
      options.log(`round ${round + 1} of ${options.rounds}, target order ${order.join(", ")}`);
      for (const scenario of scenarios) {
        for (const tool of toolsFor(scenario, wrkInstalled)) {
          for (const name of order.filter((candidate) => scenario.targets.includes(candidate))) {
            const measurement = await measureScenario(scenario, targets.get(name)!, tool, secret, options.durationSeconds, round);
            measurements.push(measurement);
            options.log(`  ${scenario.id.padEnd(18)} ${tool.padEnd(10)} ${name.padEnd(6)} ${describe(measurement)}`);
            await Bun.sleep(PAUSE_BETWEEN_MEASUREMENTS_MS);
          }
        }
      }
    }

    const peakRssMiB = {
      direct: peakRssKiB(upstream.pids()) / 1024,
      nginx: peakRssKiB(nginx.pids()) / 1024,
      gate: peakRssKiB(gate.pids()) / 1024,
    };
    return {
      scenarios,
      tools: [...new Set(scenarios.flatMap((scenario) => toolsFor(scenario, wrkInstalled)))],
      autocannonRuntime: autocannonRuntime(),
      nginxWorkers: nginx.pids().length - 1,
      measurements,
      summary: summarize(measurements),
      peakRssMiB,
    };
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await stopAll();
  }
}

// Memory-flatness run: puts the gate under a rotating load of every scenario for a fixed
// time and samples its resident memory every few seconds. A leak shows as a last sample
// well above the first one.
import { randomBytes } from "node:crypto";
import { measureScenario, type Measurement } from "./e2e/measure.ts";
import { rssKiB, cpuSeconds } from "./e2e/process-stats.ts";
import { SCENARIOS } from "./e2e/scenarios.ts";
import { startGate, startUpstream, writeSecretFile, type Target } from "./e2e/targets.ts";
import { findWrk } from "./e2e/wrk.ts";

export interface SoakOptions {
  readonly durationSeconds: number;
  readonly sampleIntervalSeconds: number;
  /** Length of each scenario's turn in the rotation. */
  readonly phaseSeconds: number;
  readonly gateCommand?: readonly string[];
  readonly log: (line: string) => void;
}

export interface SoakResult {
  readonly durationSeconds: number;
  readonly sampleIntervalSeconds: number;
  readonly phaseSeconds: number;
  /** Resident memory before any load, after preflight start-up, in MiB. */
  readonly idleRssMiB: number;
  /** Resident memory samples taken while the load ran. */
  readonly samples: readonly { readonly seconds: number; readonly rssMiB: number }[];
  readonly firstRssMiB: number;
  readonly lastRssMiB: number;
  readonly maxRssMiB: number;
  /** Resident memory 5 s after the load stopped. */
  readonly afterRssMiB: number;
  /**
   * Largest sample of each full rotation through the scenarios. The same load repeats
   * in every rotation, so a leak shows as a rising sequence.
   */
  readonly rotationMaxRssMiB: readonly number[];
  readonly gateCpuSeconds: number;
  readonly phases: readonly SoakPhase[];
}

export interface SoakPhase {
  readonly scenario: string;
  readonly startSeconds: number;
  readonly endSeconds: number;
  readonly perSecond: number;
  readonly problem: string | null;
}

const SETTLE_MS = 5000;

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const secret = randomBytes(32).toString("base64");
  const tool = findWrk() !== null ? "wrk" : "autocannon";
  const started: Target[] = [];
  try {
    const upstream = await startUpstream();
    started.push(upstream);
    const gate = await startGate(upstream.url, writeSecretFile(secret), options.gateCommand);
    started.push(gate);
    const pids = gate.pids();
    const idleRssMiB = rssKiB(pids) / 1024;
    const cpuAtStart = cpuSeconds(pids);
    options.log(`soak: gate ${gate.url}, ${options.durationSeconds} s, idle RSS ${idleRssMiB.toFixed(1)} MiB`);

    const start = performance.now();
    const elapsedSeconds = () => (performance.now() - start) / 1000;
    const samples: { seconds: number; rssMiB: number }[] = [];
    const sampler = setInterval(() => {
      const sample = { seconds: Math.round(elapsedSeconds()), rssMiB: rssKiB(pids) / 1024 };
      samples.push(sample);
      options.log(`  ${String(sample.seconds).padStart(4)} s  RSS ${sample.rssMiB.toFixed(1)} MiB`);
    }, options.sampleIntervalSeconds * 1000);

    const phases: SoakPhase[] = [];
    for (let turn = 0; elapsedSeconds() < options.durationSeconds; turn++) {
      const scenario = SCENARIOS[turn % SCENARIOS.length]!;
      const remaining = options.durationSeconds - elapsedSeconds();
      const seconds = Math.max(1, Math.min(options.phaseSeconds, Math.floor(remaining)));
      const startSeconds = elapsedSeconds();
      const measurement: Measurement = await measureScenario(scenario, gate, scenario.kind === "websocket" ? "ws-client" : tool, secret, seconds, turn);
      phases.push({ scenario: scenario.id, startSeconds, endSeconds: elapsedSeconds(), perSecond: measurement.perSecond, problem: measurement.problem });
    }
    clearInterval(sampler);
    await Bun.sleep(SETTLE_MS);

    const values = samples.map((sample) => sample.rssMiB);
    const rotationMaxRssMiB: number[] = [];
    for (let first = 0; first < phases.length; first += SCENARIOS.length) {
      const rotation = phases.slice(first, first + SCENARIOS.length);
      const start = rotation[0]!.startSeconds;
      const end = rotation.at(-1)!.endSeconds;
      const inside = samples.filter((sample) => sample.seconds >= start && sample.seconds <= end).map((sample) => sample.rssMiB);
      if (inside.length > 0) rotationMaxRssMiB.push(Math.max(...inside));
    }
    return {
      durationSeconds: options.durationSeconds,
      sampleIntervalSeconds: options.sampleIntervalSeconds,
      phaseSeconds: options.phaseSeconds,
      idleRssMiB,
      samples,
      firstRssMiB: values[0] ?? Number.NaN,
      lastRssMiB: values.at(-1) ?? Number.NaN,
      maxRssMiB: Math.max(...values),
      afterRssMiB: rssKiB(pids) / 1024,
      rotationMaxRssMiB,
      gateCpuSeconds: cpuSeconds(pids) - cpuAtStart,
      phases,
    };
  } finally {
    await Promise.all(started.map((target) => target.stop()));
  }
}

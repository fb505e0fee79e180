// Cost of the metrics on the request path: one countDecision and one observeLatency per
// request, as src/metrics.ts does them, against label-bound prom-client children. Each
// case runs in a fresh Bun process, and the rounds alternate the order of the cases.
//
//   bun bench/metrics.ts                        every case, 5 rounds, a table and JSON
//   bun bench/metrics.ts --output bench/results/metrics.json   also write the JSON there
//   bun bench/metrics.ts --rounds 3 --time 500
//   bun bench/metrics.ts --case NAME --time 1000  one case in this process, JSON
//   bun bench/metrics.ts --scrape --heap-mb 75     time of render() and of the heap-space call
import { cpus } from "node:os";
import { getHeapSpaceStatistics } from "node:v8";
import { collectDefaultMetrics, Counter, Histogram, Registry } from "prom-client";
import { Bench } from "tinybench";
import type { Decision } from "../src/gate.ts";
import { createMetrics, LATENCY_BUCKETS } from "../src/metrics.ts";

const REQUESTS_PER_ITERATION = 1024;

/** Builds a request mix: 70 % allowed by one of two secrets, 20 % whitelisted, 10 % rejected. */
function requestMix(): { decisions: Decision[]; latencies: Float64Array } {
  const decisions: Decision[] = [];
  const latencies = new Float64Array(REQUESTS_PER_ITERATION);
  let seed = 12345;
  for (let index = 0; index < REQUESTS_PER_ITERATION; index++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    const draw = seed / 2147483648;
    if (draw < 0.7) decisions.push({ outcome: "allowed", label: draw < 0.6 ? "2026-q4" : "2026-q3" });
    else if (draw < 0.9) decisions.push({ outcome: "whitelisted", rule: "static" });
    else decisions.push({ outcome: "rejected", reason: draw < 0.95 ? "missing" : "wrong" });
    // Log-uniform between 0.2 ms and 2 s.
    latencies[index] = 0.0002 * 10_000 ** ((index * 0.618034) % 1);
  }
  return { decisions, latencies };
}

interface MetricsCase {
  readonly name: string;
  readonly description: string;
  /** Does the start-up work and returns the per-request call. */
  prepare(): (decision: Decision, seconds: number) => void;
}

const CASES: readonly MetricsCase[] = [
  {
    name: "createMetrics",
    description: "src/metrics.ts: plain numbers, copied into prom-client at scrape time",
    prepare() {
      const metrics = createMetrics();
      metrics.addSecretLabels(["2026-q4", "2026-q3"]);
      return (decision, seconds) => {
        metrics.countDecision(decision);
        metrics.observeLatency(seconds);
      };
    },
  },
  {
    name: "prom-client children",
    description: "counter.labels(...) children cached in Maps, then child.inc() and histogram.observe()",
    prepare() {
      const register = new Registry();
      const labelNames = ["outcome", "reason"];
      const requests = new Counter({ name: "requests_total", help: "-", labelNames, registers: [register] });
      const accepted = new Counter({ name: "accepted_total", help: "-", labelNames: ["secret"], registers: [register] });
      const buckets = [...LATENCY_BUCKETS];
      const latency = new Histogram({ name: "duration_seconds", help: "-", buckets, registers: [register] });
      const byOutcome = new Map<string, Counter.Internal>();
      for (const key of ["allowed", "whitelisted", "missing", "wrong"]) {
        const outcome = key === "allowed" || key === "whitelisted" ? key : "rejected";
        byOutcome.set(key, requests.labels(outcome, outcome === "rejected" ? key : ""));
      }
      const bySecret = new Map([["2026-q4", accepted.labels("2026-q4")], ["2026-q3", accepted.labels("2026-q3")]]);
      return (decision, seconds) => {
        const key = decision.outcome === "rejected" ? decision.reason : decision.outcome;
        byOutcome.get(key)!.inc();
        if (decision.outcome === "allowed") bySecret.get(decision.label)!.inc();
        latency.observe(seconds);
      };
    },
  },
];

interface CaseResult {
  readonly name: string;
  readonly description: string;
  /** Nanoseconds per request: median and p99 of the batch means. */
  readonly nsPerRequest: { readonly p50: number; readonly p99: number };
}

async function runCase(name: string, timeMs: number): Promise<CaseResult> {
  const spec = CASES.find((candidate) => candidate.name === name);
  if (spec === undefined) throw new Error(`unknown case "${name}". The cases are: ${CASES.map((known) => known.name).join(", ")}`);
  const record = spec.prepare();
  const { decisions, latencies } = requestMix();
  const bench = new Bench({ time: timeMs, warmupTime: Math.min(500, timeMs / 2), retainSamples: false, throws: true });
  bench.add(name, () => {
    for (let index = 0; index < REQUESTS_PER_ITERATION; index++) record(decisions[index]!, latencies[index]!);
  });
  await bench.run();
  const result = bench.tasks[0]!.result;
  if (!("latency" in result)) throw new Error(`case "${name}" ended in state ${result.state}`);
  const perRequest = (milliseconds: number) => (milliseconds * 1e6) / REQUESTS_PER_ITERATION;
  return {
    name,
    description: spec.description,
    nsPerRequest: { p50: perRequest(result.latency.p50), p99: perRequest(result.latency.p99) },
  };
}

async function runInFreshProcess(name: string, timeMs: number): Promise<CaseResult> {
  const child = Bun.spawn([process.execPath, import.meta.path, "--case", name, "--time", String(timeMs)], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const [output, exitCode] = await Promise.all([new Response(child.stdout).text(), child.exited]);
  if (exitCode !== 0) throw new Error(`case "${name}" failed with exit status ${exitCode}`);
  return JSON.parse(output) as CaseResult;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Milliseconds per call of `call`, the median of `runs` calls after a warm-up. */
async function medianMs(call: () => unknown, runs: number): Promise<number> {
  const times: number[] = [];
  for (let run = 0; run < runs + 5; run++) {
    const start = Bun.nanoseconds();
    await call();
    if (run >= 5) times.push((Bun.nanoseconds() - start) / 1e6);
  }
  return median(times);
}

/**
 * Times a scrape with at least `heapMb` MB of live objects: createMetrics().render(), all of
 * prom-client's default metrics, and the v8.getHeapSpaceStatistics() call that
 * src/metrics.ts leaves out.
 */
async function measureScrape(heapMb: number): Promise<Record<string, number>> {
  const live: object[][] = [];
  while (process.memoryUsage().heapUsed < heapMb * 2 ** 20) {
    live.push(Array.from({ length: 100_000 }, (_, index) => ({ index })));
  }
  const metrics = createMetrics();
  const allDefaults = new Registry();
  collectDefaultMetrics({ register: allDefaults });
  return {
    heapUsedMb: Math.round(process.memoryUsage().heapUsed / 2 ** 20),
    renderMs: await medianMs(() => metrics.render(), 50),
    allDefaultMetricsMs: await medianMs(() => allDefaults.metrics(), 50),
    heapSpaceStatisticsMs: await medianMs(() => getHeapSpaceStatistics(), 50),
    liveObjects: live.length * 100_000,
  };
}

function flagValue(argv: readonly string[], flag: string): string | undefined {
  const index = argv.indexOf(flag);
  return index < 0 ? undefined : argv[index + 1];
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  const timeMs = Number(flagValue(argv, "--time") ?? 1000);
  const caseName = flagValue(argv, "--case");
  if (argv.includes("--scrape")) {
    console.log(JSON.stringify({ bun: Bun.version, ...(await measureScrape(Number(flagValue(argv, "--heap-mb") ?? 0))) }));
  } else if (caseName !== undefined) {
    console.log(JSON.stringify(await runCase(caseName, timeMs)));
  } else {
    const rounds = Number(flagValue(argv, "--rounds") ?? 5);
    const runs = new Map<string, CaseResult[]>(CASES.map((spec) => [spec.name, []]));
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? CASES : [...CASES].reverse();
      for (const spec of order) runs.get(spec.name)!.push(await runInFreshProcess(spec.name, timeMs));
    }
    const results = CASES.map((spec) => {
      const caseRuns = runs.get(spec.name)!;
      const p50 = median(caseRuns.map((run) => run.nsPerRequest.p50));
      const p99 = median(caseRuns.map((run) => run.nsPerRequest.p99));
      return { name: spec.name, description: spec.description, nsPerRequest: { p50, p99 } };
    });
    console.log("| Case | ns/request p50 | ns/request p99 |\n|---|---:|---:|");
    for (const result of results) {
      console.log(`| ${result.name} | ${result.nsPerRequest.p50.toFixed(1)} | ${result.nsPerRequest.p99.toFixed(1)} |`);
    }
    const machine = { cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, platform: process.platform, arch: process.arch };
    const record = { bun: Bun.version, machine, rounds, timeMs, requestsPerIteration: REQUESTS_PER_ITERATION, results };
    const json = JSON.stringify(record, null, 2);
    const output = flagValue(argv, "--output");
    if (output === undefined) console.log(json);
    else await Bun.write(output, `${json}\n`);
  }
}

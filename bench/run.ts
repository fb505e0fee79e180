// `npm run bench`: builds the gate, runs the micro-benchmarks and the end-to-end
// comparison with nginx, stores the results as JSON and regenerates the tables in
// docs/benchmarks.md. Nothing here fails on speed; it only measures.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { resummarize, runEndToEnd } from "./e2e.ts";
import { ensureNginx } from "../test/support/nginx.ts";
import { machineInfo, versions } from "./machine.ts";
import { formatMicroTable, runMicroBenchmarks } from "./micro.ts";
import { readJsonOrNull, updateBenchmarksDoc, type BenchResults, type RunInfo, type SoakResults } from "./report.ts";
import { runSoak } from "./soak.ts";

const ROOT = join(import.meta.dir, "..");
const LATEST_JSON = join(ROOT, "bench", "results", "latest.json");
const SOAK_JSON = join(ROOT, "bench", "results", "soak.json");
const PARTIAL_JSON = join(ROOT, "bench", "results", "partial.json");
const BENCHMARKS_DOC = join(ROOT, "docs", "benchmarks.md");

const HELP = `Usage: bun bench/run.ts [OPTIONS]

Runs the micro-benchmarks and the end-to-end comparison of the gate with nginx and with
the stand-in Mattermost alone, writes bench/results/latest.json and regenerates the
tables in docs/benchmarks.md. A full run takes about 9 minutes on 2 CPUs.

Options:
  --quick              one short round of everything, about 1 minute (a smoke test)
  --duration SECONDS   length of each end-to-end measurement (default 4; 1 with --quick)
  --rounds N           rounds over all targets, in rotating order (default 3; 1 with --quick)
  --warmup SECONDS     load per target and scenario before measuring (default 1; 0 with --quick)
  --only micro|e2e     run only the micro-benchmarks or only the end-to-end part
  --scenario ID        run only this end-to-end scenario; repeatable
  --soak               instead: load the gate for --soak-seconds and sample its memory,
                       writing bench/results/soak.json
  --soak-seconds S     length of the soak run (default 300)
  --gate-command CMD   start the gate with CMD (split at spaces) instead of dist/preauth-gate,
                       and skip the build; for trying changes on a copy of src/
  --output FILE        write the JSON there instead, and leave the documentation alone

Only a complete run (no --quick, --only, --scenario, --gate-command or --output) writes
bench/results/latest.json and docs/benchmarks.md; the others write
bench/results/partial.json unless --output says otherwise.
  --no-build           use dist/preauth-gate as it is
  --render             measure nothing: recompute the summary of bench/results/latest.json
                       and regenerate docs/benchmarks.md from it
  -h, --help           show this text`;

interface RunOptions {
  readonly quick: boolean;
  readonly durationSeconds: number;
  readonly rounds: number;
  readonly warmupSeconds: number;
  readonly microTimeMs: number;
  readonly only: "micro" | "e2e" | null;
  readonly scenarioIds: string[];
  readonly soak: boolean;
  readonly soakSeconds: number;
  readonly gateCommand: string[] | undefined;
  readonly output: string | null;
  readonly build: boolean;
  readonly render: boolean;
}

function positiveNumber(text: string | undefined, fallback: number, flag: string): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${flag} "${text}": expected a positive number`);
  return value;
}

function parseOptions(argv: string[]): RunOptions | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      duration: { type: "string" },
      rounds: { type: "string" },
      warmup: { type: "string" },
      only: { type: "string" },
      scenario: { type: "string", multiple: true },
      soak: { type: "boolean" },
      "soak-seconds": { type: "string" },
      "gate-command": { type: "string" },
      output: { type: "string" },
      "no-build": { type: "boolean" },
      render: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) return null;
  const quick = values.quick === true;
  if (values.only !== undefined && values.only !== "micro" && values.only !== "e2e") {
    throw new Error(`--only "${values.only}": expected micro or e2e`);
  }
  const rounds = positiveNumber(values.rounds, quick ? 1 : 3, "--rounds");
  if (!Number.isInteger(rounds)) throw new Error(`--rounds "${values.rounds}": expected a whole number`);
  const gateCommand = values["gate-command"]?.split(" ").filter((part) => part !== "");
  return {
    quick,
    durationSeconds: positiveNumber(values.duration, quick ? 1 : 4, "--duration"),
    rounds,
    warmupSeconds: values.warmup === "0" ? 0 : positiveNumber(values.warmup, quick ? 0 : 1, "--warmup"),
    microTimeMs: quick ? 250 : 1000,
    only: (values.only as "micro" | "e2e" | undefined) ?? null,
    scenarioIds: values.scenario ?? [],
    soak: values.soak === true,
    soakSeconds: positiveNumber(values["soak-seconds"], 300, "--soak-seconds"),
    gateCommand,
    output: values.output ?? null,
    build: values["no-build"] !== true && gateCommand === undefined && values.render !== true,
    render: values.render === true,
  };
}

function log(line: string): void {
  console.error(line);
}

function buildGate(): void {
  log("building dist/preauth-gate");
  const child = Bun.spawnSync([process.execPath, "run", "build"], { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
  if (child.exitCode !== 0) throw new Error(`"bun run build" failed with exit status ${child.exitCode}`);
}

async function runInfo(): Promise<RunInfo> {
  const nginx = await ensureNginx();
  return {
    date: new Date().toISOString(),
    command: `bun bench/run.ts ${process.argv.slice(2).join(" ")}`.trim(),
    machine: machineInfo(),
    versions: versions(nginx),
  };
}

function writeJson(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
  log(`results written to ${path}`);
}

function render(): void {
  const stored = readJsonOrNull<BenchResults>(LATEST_JSON);
  if (stored === null) throw new Error(`${LATEST_JSON} does not exist; run a complete benchmark first`);
  const results = { ...stored, e2e: stored.e2e === null ? null : resummarize(stored.e2e) };
  writeJson(LATEST_JSON, results);
  updateBenchmarksDoc(BENCHMARKS_DOC, results, readJsonOrNull<SoakResults>(SOAK_JSON));
  log(`tables regenerated in ${BENCHMARKS_DOC}`);
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (options === null) {
    console.log(HELP);
    return;
  }
  if (options.render) {
    render();
    return;
  }
  if (options.build) buildGate();
  const info = await runInfo();
  const complete = options.gateCommand === undefined && options.output === null;

  if (options.soak) {
    const soak = await runSoak({
      durationSeconds: options.soakSeconds,
      sampleIntervalSeconds: 5,
      phaseSeconds: 15,
      gateCommand: options.gateCommand,
      log,
    });
    const results: SoakResults = { ...info, soak };
    writeJson(options.output ?? (complete ? SOAK_JSON : PARTIAL_JSON), results);
    if (complete) updateBenchmarksDoc(BENCHMARKS_DOC, readJsonOrNull<BenchResults>(LATEST_JSON), results);
    return;
  }

  let micro = null;
  if (options.only !== "e2e") {
    log("micro-benchmarks, one process per case");
    micro = await runMicroBenchmarks(options.microTimeMs);
    log(formatMicroTable(micro));
  }
  let e2e = null;
  if (options.only !== "micro") {
    e2e = await runEndToEnd({
      durationSeconds: options.durationSeconds,
      rounds: options.rounds,
      warmupSeconds: options.warmupSeconds,
      gateCommand: options.gateCommand,
      scenarioIds: options.scenarioIds,
      log,
    });
  }
  const results: BenchResults = {
    ...info,
    options: {
      durationSeconds: options.durationSeconds,
      rounds: options.rounds,
      warmupSeconds: options.warmupSeconds,
      microTimeMs: options.microTimeMs,
    },
    micro,
    e2e,
  };
  const writesDocs = complete && !options.quick && options.only === null && options.scenarioIds.length === 0;
  writeJson(options.output ?? (writesDocs ? LATEST_JSON : PARTIAL_JSON), results);
  if (writesDocs) {
    updateBenchmarksDoc(BENCHMARKS_DOC, results, readJsonOrNull<SoakResults>(SOAK_JSON));
    log(`tables regenerated in ${BENCHMARKS_DOC}`);
  }
}

try {
  await main();
} catch (error) {
  console.error(`bench: ${(error as Error).message}`);
  process.exit(1);
}

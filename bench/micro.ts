// Micro-benchmarks of the per-request work: the whitelist matcher, the secret check and
// the whole decision. Each case runs in a fresh Bun process, so the JIT state of one case
// cannot help or hurt the next.
//
//   bun bench/micro.ts                 run every case and print a table
//   bun bench/micro.ts --time 300      shorter runs (milliseconds per case)
//   bun bench/micro.ts --case NAME     run one case in this process and print JSON
//
// A sample is one pass over a batch of calls, because one call is too short for the timer
// to resolve well. Nanoseconds per call are the sample divided by the batch size, so the
// p99 is the p99 of batch means and hides single slow calls inside a batch.
import { Bench } from "tinybench";
import { createGate } from "../src/gate.ts";
import { createSecretChecker, type SecretEntry } from "../src/secrets.ts";
import { isForwardable, parseRequestTarget } from "../src/target.ts";
import { compileWhitelist, SSO_GROUPS } from "../src/whitelist.ts";
import { whitelistedBy } from "../test/support/reference-model.ts";
import { mixPaths } from "./path-mix.ts";
import { plainWhitelistMatch } from "./plain-whitelist.ts";

const SECRET = "q3Jx9Vd2mR7tYp1Ks8Wn4Lb6Hc0Fg5Ze2Ua7Io3Pu9E=";
const SECRET_ENTRIES: readonly SecretEntry[] = [{ label: "bench", value: SECRET, expiresAt: null }];
const SECRET_CALLS_PER_ITERATION = 64;

/** A benchmark case: `prepare` does the start-up work and returns one iteration. */
interface MicroCase {
  readonly name: string;
  readonly group: "whitelist" | "secret" | "decision";
  readonly description: string;
  prepare(): { iteration: () => number; callsPerIteration: number };
}

export interface MicroResult {
  readonly name: string;
  readonly group: MicroCase["group"];
  readonly description: string;
  readonly callsPerIteration: number;
  readonly samples: number;
  /** Calls that returned a rule, decision or match; kept so that the JIT cannot drop the calls. */
  readonly hits: number;
  /** Nanoseconds per call: median and p99 of the batch means, and the mean. */
  readonly nsPerCall: { readonly p50: number; readonly p99: number; readonly mean: number };
}

/**
 * Returns a copy of `text` that is a distinct string object, as a header value parsed
 * from a request is, so that `===` has to compare the characters.
 */
function freshCopy(text: string): string {
  return Buffer.from(text, "latin1").toString("latin1");
}

function overMix(call: (path: string) => unknown): () => { iteration: () => number; callsPerIteration: number } {
  return () => {
    const paths = mixPaths();
    return {
      callsPerIteration: paths.length,
      iteration() {
        let hits = 0;
        for (const path of paths) if (call(path) !== null) hits++;
        return hits;
      },
    };
  };
}

function repeated(call: () => unknown): { iteration: () => number; callsPerIteration: number } {
  return {
    callsPerIteration: SECRET_CALLS_PER_ITERATION,
    iteration() {
      let hits = 0;
      for (let index = 0; index < SECRET_CALLS_PER_ITERATION; index++) if (call()) hits++;
      return hits;
    },
  };
}

const ALL_GROUPS = { groups: SSO_GROUPS, ssoServices: [] as string[] };

export const MICRO_CASES: readonly MicroCase[] = [
  {
    name: "whitelist: compiled matcher",
    group: "whitelist",
    description: "compileWhitelist(...).match(path), all groups enabled, over the path mix",
    prepare: () => {
      const whitelist = compileWhitelist(ALL_GROUPS);
      return overMix((path) => whitelist.match(path))();
    },
  },
  {
    name: "whitelist: plain loop",
    group: "whitelist",
    description: "bench/plain-whitelist.ts: exact, prefix and regex rules tried in turn",
    prepare: overMix(plainWhitelistMatch),
  },
  {
    name: "whitelist: test reference model",
    group: "whitelist",
    description: "whitelistedBy from test/support/reference-model.ts, which builds its regexes per call",
    prepare: overMix((path) => whitelistedBy(path, { groups: SSO_GROUPS, services: [] })),
  },
  {
    name: "secret: checker, right secret",
    group: "secret",
    description: "createSecretChecker: SHA-256 of the presented value and timingSafeEqual",
    prepare: () => {
      const check = createSecretChecker(SECRET_ENTRIES);
      const presented = freshCopy(SECRET);
      return repeated(() => check(presented).ok);
    },
  },
  {
    name: "secret: checker, wrong secret",
    group: "secret",
    description: "same length as the secret, last character different",
    prepare: () => {
      const check = createSecretChecker(SECRET_ENTRIES);
      const presented = freshCopy(`${SECRET.slice(0, -1)}A`);
      return repeated(() => check(presented).ok);
    },
  },
  {
    name: "secret: checker, missing header",
    group: "secret",
    description: "null, as headerValue returns for an absent header",
    prepare: () => {
      const check = createSecretChecker(SECRET_ENTRIES);
      return repeated(() => check(null).ok);
    },
  },
  {
    name: "secret: plain ===, right secret",
    group: "secret",
    description: "for scale only: not constant-time, so not usable in the gate",
    prepare: () => {
      const expected = freshCopy(SECRET);
      const presented = freshCopy(SECRET);
      return repeated(() => presented === expected);
    },
  },
  {
    name: "decision: mix with the secret",
    group: "decision",
    description: "createGate(...).decide(path, secret, false) over the path mix",
    prepare: () => {
      const gate = createGate({ secrets: SECRET_ENTRIES, ...ALL_GROUPS, websocketExempt: false });
      const presented = freshCopy(SECRET);
      return overMix((path) => gate.decide(path, presented, false))();
    },
  },
  {
    name: "decision: mix without a secret",
    group: "decision",
    description: "createGate(...).decide(path, null, false): whitelisted or rejected",
    prepare: () => {
      const gate = createGate({ secrets: SECRET_ENTRIES, ...ALL_GROUPS, websocketExempt: false });
      return overMix((path) => gate.decide(path, null, false))();
    },
  },
  {
    name: "decision: parse URL and decide",
    group: "decision",
    description: "parseRequestTarget(head.target), decide with the secret, then isForwardable: the decision work before the gate writes the upstream head",
    prepare: () => {
      const gate = createGate({ secrets: SECRET_ENTRIES, ...ALL_GROUPS, websocketExempt: false });
      const presented = freshCopy(SECRET);
      const urls = mixPaths().map((path) => `${path}?page=0&per_page=60`);
      return {
        callsPerIteration: urls.length,
        iteration() {
          let hits = 0;
          for (const url of urls) {
            const parsed = parseRequestTarget(url);
            if (!parsed.ok || gate.decide(parsed.target.path, presented, false).outcome === "rejected") continue;
            if (isForwardable(parsed.target)) hits++;
          }
          return hits;
        },
      };
    },
  },
];

/** Runs one case in this process for about `timeMs` and returns its figures. */
export async function runMicroCase(name: string, timeMs: number): Promise<MicroResult> {
  const spec = MICRO_CASES.find((candidate) => candidate.name === name);
  if (spec === undefined) throw new Error(`unknown micro-benchmark case "${name}"`);
  const { iteration, callsPerIteration } = spec.prepare();

  let hits = 0;
  const bench = new Bench({ time: timeMs, warmupTime: Math.min(500, timeMs / 2), retainSamples: false, throws: true });
  bench.add(name, () => {
    hits += iteration();
  });
  await bench.run();
  const result = bench.tasks[0]!.result;
  if (!("latency" in result)) throw new Error(`micro-benchmark case "${name}" ended in state ${result.state}`);

  const toNsPerCall = (milliseconds: number) => (milliseconds * 1e6) / callsPerIteration;
  return {
    name,
    group: spec.group,
    description: spec.description,
    callsPerIteration,
    samples: result.latency.samplesCount,
    hits,
    nsPerCall: {
      p50: toNsPerCall(result.latency.p50),
      p99: toNsPerCall(result.latency.p99),
      mean: toNsPerCall(result.latency.mean),
    },
  };
}

/** Runs every case, each in a fresh `bun` process, one after the other. */
export async function runMicroBenchmarks(timeMs: number): Promise<MicroResult[]> {
  const results: MicroResult[] = [];
  for (const spec of MICRO_CASES) {
    const child = Bun.spawn([process.execPath, import.meta.path, "--case", spec.name, "--time", String(timeMs)], {
      stdout: "pipe",
      stderr: "inherit",
    });
    const [output, exitCode] = await Promise.all([new Response(child.stdout).text(), child.exited]);
    if (exitCode !== 0) throw new Error(`micro-benchmark case "${spec.name}" failed with exit status ${exitCode}`);
    results.push(JSON.parse(output) as MicroResult);
  }
  return results;
}

export function formatMicroTable(results: readonly MicroResult[]): string {
  const lines = ["| Case | ns/call p50 | ns/call p99 | calls per sample | samples |", "|---|---:|---:|---:|---:|"];
  for (const result of results) {
    const { p50, p99 } = result.nsPerCall;
    lines.push(`| ${result.name} | ${p50.toFixed(1)} | ${p99.toFixed(1)} | ${result.callsPerIteration} | ${result.samples} |`);
  }
  return lines.join("\n");
}

function flagValue(argv: readonly string[], flag: string): string | undefined {
  const index = argv.indexOf(flag);
  return index < 0 ? undefined : argv[index + 1];
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  const timeMs = Number(flagValue(argv, "--time") ?? 1000);
  const caseName = flagValue(argv, "--case");
  if (caseName !== undefined) {
    console.log(JSON.stringify(await runMicroCase(caseName, timeMs)));
  } else {
    console.log(formatMicroTable(await runMicroBenchmarks(timeMs)));
  }
}

// A/B comparison of gate builds: one stand-in Mattermost, one process per variant, the
// variants measured in turn (rotating the order each round) on the chosen scenarios.
// For trying a change to src/ on a copy before proposing it.
//
//   bun bench/ab.ts --variant base=dist/preauth-gate \
//                   --variant exp="bun /tmp/gate-exp/src/main.ts" \
//                   --scenario protected-call --scenario static-50k --rounds 5 --duration 4
//
// Prints, per scenario and variant, the medians of requests (or messages) per second,
// p50 and p99 latency and the gate's CPU time per request.
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { measureScenario, type Measurement } from "./e2e/measure.ts";
import { SCENARIOS } from "./e2e/scenarios.ts";
import { startGate, startUpstream, writeSecretFile, type Target } from "./e2e/targets.ts";
import { findWrk } from "./e2e/wrk.ts";
import { median } from "./stats.ts";

interface Variant {
  readonly name: string;
  readonly command: string[];
}

function parseVariant(text: string): Variant {
  const separator = text.indexOf("=");
  if (separator <= 0) throw new Error(`--variant "${text}": expected NAME=COMMAND`);
  return { name: text.slice(0, separator), command: text.slice(separator + 1).split(" ").filter((part) => part !== "") };
}

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    variant: { type: "string", multiple: true },
    scenario: { type: "string", multiple: true },
    rounds: { type: "string", default: "3" },
    duration: { type: "string", default: "4" },
  },
  strict: true,
});
const variants = (values.variant ?? []).map(parseVariant);
if (variants.length < 2) throw new Error("give at least two --variant NAME=COMMAND");
const scenarios = SCENARIOS.filter((scenario) => (values.scenario ?? ["protected-call"]).includes(scenario.id));
const rounds = Number(values.rounds);
const durationSeconds = Number(values.duration);
const tool = findWrk() !== null ? "wrk" : "autocannon";

const secret = randomBytes(32).toString("base64");
const started: Target[] = [];
try {
  const upstream = await startUpstream();
  started.push(upstream);
  const gates = new Map<string, Target>();
  for (const variant of variants) {
    const gate = await startGate(upstream.url, writeSecretFile(secret), variant.command);
    started.push(gate);
    gates.set(variant.name, gate);
  }

  const results: (Measurement & { variant: string })[] = [];
  for (let round = 0; round < rounds; round++) {
    const shift = round % variants.length;
    const order = [...variants.slice(shift), ...variants.slice(0, shift)];
    for (const scenario of scenarios) {
      for (const variant of order) {
        const load = scenario.kind === "websocket" ? "ws-client" : tool;
        const measurement = await measureScenario(scenario, gates.get(variant.name)!, load, secret, durationSeconds, round);
        results.push({ ...measurement, variant: variant.name });
        const note = measurement.problem === null ? "" : `  NOT COUNTED: ${measurement.problem}`;
        console.error(
          `round ${round + 1} ${scenario.id} ${variant.name}: ${measurement.perSecond.toFixed(0)}/s, cpu ${measurement.server.cpuMicrosPerRequest.toFixed(1)} us/req${note}`,
        );
        await Bun.sleep(300);
      }
    }
  }

  console.log("| Scenario | Variant | per s | p50 ms | p99 ms | gate CPU µs/req | max RSS MiB |");
  console.log("|---|---|---:|---:|---:|---:|---:|");
  for (const scenario of scenarios) {
    for (const variant of variants) {
      const mine = results.filter((result) => result.scenario === scenario.id && result.variant === variant.name && result.problem === null);
      const cells = [
        scenario.id,
        variant.name,
        median(mine.map((result) => result.perSecond)).toFixed(0),
        median(mine.map((result) => result.latencyMs.p50)).toFixed(2),
        median(mine.map((result) => result.latencyMs.p99)).toFixed(2),
        median(mine.map((result) => result.server.cpuMicrosPerRequest)).toFixed(1),
        (Math.max(...mine.map((result) => result.server.maxRssKiB)) / 1024).toFixed(0),
      ];
      console.log(`| ${cells.join(" | ")} |`);
    }
  }
} finally {
  await Promise.all(started.map((target) => target.stop()));
}

// Gate cost by response size: downloads of growing size through the gate, to find where
// the CPU time per request jumps. Under Bun 1.4.5 it jumps between bodies of 15,000 and
// 16,000 bytes, where headers and body together pass 16 KiB (see docs/benchmarks.md).
//
//   bun bench/size-sweep.ts [--gate-command "bun src/main.ts"] [--duration 3]
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { measureScenario } from "./e2e/measure.ts";
import type { HttpScenario } from "./e2e/scenarios.ts";
import { DEFAULT_GATE_BINARY, startGate, startUpstream, writeSecretFile, type Target } from "./e2e/targets.ts";
import { findWrk } from "./e2e/wrk.ts";

const SIZES = [4_096, 12_000, 15_000, 16_000, 17_000, 24_000, 51_200, 262_144];

function downloadScenario(bytes: number): HttpScenario {
  return {
    kind: "http",
    id: `download-${bytes}`,
    title: `Download, ${bytes} bytes`,
    method: "GET",
    path: `/api/v4/files/k3m9qz7xw1fbtrp8ds5yhn4cja?size=${bytes}`,
    withSecret: true,
    bodyBytes: 0,
    expected: "success",
    responseBytes: bytes,
    connections: 50,
    targets: ["gate"],
    wrkOnly: false,
  };
}

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { "gate-command": { type: "string" }, duration: { type: "string", default: "3" } },
  strict: true,
});
const gateCommand = values["gate-command"]?.split(" ").filter((part) => part !== "") ?? [DEFAULT_GATE_BINARY];
const tool = findWrk() !== null ? "wrk" : "autocannon";
const secret = randomBytes(32).toString("base64");

const started: Target[] = [];
try {
  const upstream = await startUpstream();
  started.push(upstream);
  const gate = await startGate(upstream.url, writeSecretFile(secret), gateCommand);
  started.push(gate);
  console.log(`| Response bytes | req/s | p50 ms | gate CPU µs/req |`);
  console.log(`|---:|---:|---:|---:|`);
  for (const bytes of SIZES) {
    const scenario = downloadScenario(bytes);
    await measureScenario(scenario, gate, tool, secret, 1, -1);
    const measurement = await measureScenario(scenario, gate, tool, secret, Number(values.duration), 0);
    const note = measurement.problem === null ? "" : ` (not counted: ${measurement.problem})`;
    const cells = [bytes, measurement.perSecond.toFixed(0), measurement.latencyMs.p50.toFixed(2), measurement.server.cpuMicrosPerRequest.toFixed(1)];
    console.log(`| ${cells.join(" | ")} |${note}`);
  }
} finally {
  await Promise.all(started.map((target) => target.stop()));
}

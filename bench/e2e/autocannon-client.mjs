// One autocannon measurement in its own process, so that the load generator shares no
// event loop with the servers or the orchestrator. Plain JavaScript, so that Node.js can
// run it without a TypeScript step.
//
//   node bench/e2e/autocannon-client.mjs '{"url":"http://127.0.0.1:8066/api/v4/users/me",...}'
//
// Prints one JSON line with the figures; see `summarize` for the fields.
import autocannon from "autocannon";

/**
 * @param {string} text the JSON request specification: url, method, headers,
 *   bodyBytes, connections, durationSeconds, timeoutSeconds
 */
function parseSpec(text) {
  const spec = JSON.parse(text);
  for (const key of ["url", "connections", "durationSeconds"]) {
    if (spec[key] === undefined) throw new Error(`the specification has no "${key}"`);
  }
  return spec;
}

function summarize(result) {
  const statusCounts = {};
  for (const [status, entry] of Object.entries(result.statusCodeStats ?? {})) statusCounts[status] = entry.count;
  return {
    tool: "autocannon",
    requests: result.requests.total,
    durationSeconds: result.duration,
    requestsPerSecond: result.requests.total / result.duration,
    bytesPerSecond: result.throughput.total / result.duration,
    latencyMs: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
    statusCounts,
    errors: result.errors,
    timeouts: result.timeouts,
  };
}

const spec = parseSpec(process.argv[2] ?? "");
const result = await autocannon({
  url: spec.url,
  method: spec.method ?? "GET",
  headers: spec.headers ?? {},
  body: spec.bodyBytes ? Buffer.alloc(spec.bodyBytes, 0x61) : undefined,
  connections: spec.connections,
  duration: spec.durationSeconds,
  timeout: spec.timeoutSeconds ?? 30,
  pipelining: 1,
});
console.log(JSON.stringify(summarize(result)));

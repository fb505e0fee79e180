// The three servers a benchmark run sends traffic to, each in its own process on
// 127.0.0.1: the stand-in Mattermost (the floor, "direct"), nginx with the documented
// configuration, and the compiled gate. All of them forward to the same stand-in.
import { mkdirSync, mkdtempSync, chmodSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { freePort } from "../../test/support/gate-process.ts";
import { acceptsConnections, ensureNginx } from "../../test/support/nginx.ts";
import { SSO_GROUPS } from "../../src/whitelist.ts";
import { renderNginxConfig } from "./nginx-config.ts";
import { processGroup } from "./process-stats.ts";

export type TargetName = "direct" | "nginx" | "gate";

export interface Target {
  readonly name: TargetName;
  readonly port: number;
  readonly url: string;
  /** The server's processes: nginx's master and workers, or the one process. */
  pids(): number[];
  /** What the process wrote to stdout and stderr so far, for error messages. */
  output(): string;
  stop(): Promise<void>;
}

const ROOT = join(import.meta.dir, "..", "..");
const STAND_IN = join(ROOT, "test", "support", "stand-in-mattermost.ts");
export const DEFAULT_GATE_BINARY = join(ROOT, "dist", "preauth-gate");
const START_TIMEOUT_MS = 15_000;

/** Starts `command`, waits until `port` accepts connections, and wraps the process. */
async function spawnServer(name: TargetName, command: string[], port: number, pids: (child: Subprocess) => number[]): Promise<Target> {
  const child = Bun.spawn(command, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let captured = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) captured = (captured + decoder.decode(chunk, { stream: true })).slice(-20_000);
  };
  const collectors = Promise.all([collect(child.stdout), collect(child.stderr)]);

  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await acceptsConnections(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill();
      await Promise.race([collectors, Bun.sleep(200)]);
      throw new Error(`${name} did not start on port ${port} (exit ${child.exitCode}): ${command.join(" ")}\n${captured}`);
    }
    await Bun.sleep(25);
  }
  return {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    pids: () => pids(child),
    output: () => captured,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      const exited = await Promise.race([child.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
      if (!exited) child.kill("SIGKILL");
      await Promise.race([collectors, Bun.sleep(500)]);
    },
  };
}

/** Starts the stand-in Mattermost with request logging and recording off. */
export async function startUpstream(): Promise<Target> {
  const port = await freePort();
  return spawnServer("direct", [process.execPath, STAND_IN, "--port", String(port), "--quiet"], port, (child) => [child.pid]);
}

/** Starts nginx in the foreground with the benchmark configuration in a fresh directory. */
export async function startNginx(upstreamPort: number, secret: string): Promise<Target> {
  const binary = await ensureNginx();
  const port = await freePort();
  const directory = mkdtempSync(join(tmpdir(), "preauth-gate-bench-nginx-"));
  // nginx's workers run as an unprivileged user when the master runs as root.
  chmodSync(directory, 0o755);
  mkdirSync(join(directory, "logs"));
  const config = renderNginxConfig({ directory, port, upstreamPort, secret, whitelist: { groups: SSO_GROUPS, services: [] } });
  writeFileSync(join(directory, "nginx.conf"), config);
  const command = [binary, "-p", directory, "-c", join(directory, "nginx.conf"), "-e", "stderr", "-g", "daemon off;"];
  return spawnServer("nginx", command, port, (child) => processGroup(child.pid));
}

/**
 * Starts the gate with every single sign-on group enabled, as the nginx configuration has
 * them, and warnings-only logging. `gateCommand` is the compiled executable by default.
 * Experiments pass another build or `bun path/to/src/main.ts`.
 */
export async function startGate(upstreamUrl: string, secretFile: string, gateCommand: readonly string[] = [DEFAULT_GATE_BINARY]): Promise<Target> {
  const port = await freePort();
  const command = [
    ...gateCommand,
    "serve",
    "--listen",
    `127.0.0.1:${port}`,
    "--upstream",
    upstreamUrl,
    "--secret-file",
    secretFile,
    "--log-level",
    "warn",
    ...SSO_GROUPS.flatMap((group) => ["--allow", group]),
  ];
  return spawnServer("gate", command, port, (child) => [child.pid]);
}

/** Writes the run's secret to a private temporary file for the gate. */
export function writeSecretFile(secret: string): string {
  const directory = mkdtempSync(join(tmpdir(), "preauth-gate-bench-"));
  const path = join(directory, "preauth-secret");
  writeFileSync(path, `${secret}\n`, { mode: 0o600 });
  return path;
}

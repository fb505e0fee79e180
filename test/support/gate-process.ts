// Starts the compiled executable dist/preauth-gate on 127.0.0.1 for end-to-end tests.
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { captureOutput } from "./child-output.ts";

export const GATE_BINARY = join(import.meta.dir, "..", "..", "dist", "preauth-gate");

/** A secret of the documented shape: 32 random bytes in base64. */
export const TEST_SECRET = "q3Jx9Vd2mR7tYp1Ks8Wn4Lb6Hc0Fg5Ze2Ua7Io3Pu9E=";
export const SECRET_HEADER = "X-Mattermost-Preauth-Secret";

export interface GateProcess {
  readonly url: string;
  readonly port: number;
  readonly process: Subprocess<"ignore", "pipe", "pipe">;
  /** Everything the gate wrote to stdout and stderr so far. */
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<number>;
}

/** Finds a free TCP port on 127.0.0.1 by binding port 0 and closing again. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** Writes `secret` to a fresh temporary file and returns its path. */
export function writeSecretFile(secret: string = TEST_SECRET, name = "preauth-secret"): string {
  const dir = mkdtempSync(join(tmpdir(), "preauth-gate-test-"));
  const path = join(dir, name);
  writeFileSync(path, `${secret}\n`, { mode: 0o600 });
  return path;
}

export interface StartGateOptions {
  readonly upstream: string;
  /** Extra command-line arguments, for example ["--allow", "saml"]. */
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
  /** Secret file to use; a file with TEST_SECRET is made when omitted and no env secret is set. */
  readonly secretFile?: string | null;
}

/** Starts the compiled gate and waits until it accepts connections. */
export async function startGateProcess(options: StartGateOptions): Promise<GateProcess> {
  const port = await freePort();
  const args = [GATE_BINARY, "serve", "--listen", `127.0.0.1:${port}`, "--upstream", options.upstream];
  const secretFile = options.secretFile === undefined ? writeSecretFile() : options.secretFile;
  if (secretFile !== null) args.push("--secret-file", secretFile);
  args.push(...(options.args ?? []));

  const child = Bun.spawn(args, {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...options.env },
  });
  const output = captureOutput(child);
  const collectors = output.finished;

  const deadline = Date.now() + 10_000;
  while (!output.text().includes('"gate started"')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await Promise.race([collectors, Bun.sleep(200)]);
      child.kill();
      throw new Error(`the gate did not start (exit ${child.exitCode}):\n${output.text()}`);
    }
    await Bun.sleep(20);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    process: child,
    output: output.text,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode === null) child.kill(signal);
      const code = await child.exited;
      await Promise.race([collectors, Bun.sleep(500)]);
      return code;
    },
  };
}

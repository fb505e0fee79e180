// Runs the gate from source for a first look. Without --upstream it starts the stand-in
// Mattermost on a free port and makes a throw-away secret file; every other argument
// goes to `preauth-gate serve` unchanged. Stop it with Ctrl-C.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startStandInMattermost, type StandInMattermost } from "../test/support/stand-in-mattermost.ts";

const args = process.argv.slice(2);
const hasUpstream = args.some((arg) => arg === "--upstream" || arg.startsWith("--upstream="));
const hasSecret =
  args.some((arg) => arg === "--secret-file" || arg.startsWith("--secret-file=")) ||
  process.env.PREAUTH_GATE_SECRET !== undefined ||
  process.env.PREAUTH_GATE_SECRET_FILE !== undefined;
const hasListen = args.some((arg) => arg === "--listen" || arg.startsWith("--listen="));

let standIn: StandInMattermost | null = null;
const gateArgs = [...args];
if (!hasUpstream) {
  standIn = await startStandInMattermost({ quiet: true });
  gateArgs.push("--upstream", standIn.url);
}
let secretFile: string | null = null;
let secretDir: string | null = null;
if (!hasSecret) {
  secretDir = mkdtempSync(join(tmpdir(), "preauth-gate-demo-"));
  secretFile = join(secretDir, "preauth-secret");
  writeFileSync(secretFile, `${randomBytes(32).toString("base64")}\n`, { mode: 0o600 });
  gateArgs.push("--secret-file", secretFile);
}
if (!hasListen) gateArgs.push("--listen", "127.0.0.1:8066");

/** The address the gate will listen on, from `--listen ADDRESS` or `--listen=ADDRESS`. */
function listenAddress(args: readonly string[]): string {
  const joined = args.find((arg) => arg.startsWith("--listen="));
  if (joined !== undefined) return joined.slice("--listen=".length);
  const index = args.indexOf("--listen");
  return index >= 0 ? (args[index + 1] ?? "127.0.0.1:8066") : "127.0.0.1:8066";
}

const listen = listenAddress(gateArgs);
const base = `http://${listen}`;
console.error(
  [
    "preauth-gate demo",
    standIn ? `  stand-in Mattermost: ${standIn.url}` : "  upstream: as given",
    secretFile ? `  secret file: ${secretFile}` : "  secret: as given",
    "  try:",
    `    curl -i ${base}/api/v4/system/ping                  # 403, x-reject-reason: pre-auth`,
    `    curl -i ${base}/api/v4/config/client                # whitelisted`,
    secretFile
      ? `    curl -i -H "X-Mattermost-Preauth-Secret: $(cat ${secretFile})" ${base}/api/v4/users/me`
      : `    curl -i -H "X-Mattermost-Preauth-Secret: ..." ${base}/api/v4/users/me`,
    "  Ctrl-C stops it.",
    "",
  ].join("\n"),
);

const gate = Bun.spawn([process.execPath, join(import.meta.dir, "..", "src", "main.ts"), "serve", ...gateArgs], {
  stdio: ["inherit", "inherit", "inherit"],
});
const stop = () => gate.kill("SIGTERM");
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
const code = await gate.exited;
await standIn?.close();
if (secretDir !== null) rmSync(secretDir, { recursive: true, force: true });
process.exit(code);

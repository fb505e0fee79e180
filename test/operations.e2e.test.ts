// Running the compiled gate the way an administrator does: secret rotation with SIGHUP,
// expiry, draining on SIGTERM, metrics, log hygiene and TLS.
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeCertificate } from "./support/certificates.ts";
import { startStandInMattermost, type StandInMattermost } from "./support/stand-in-mattermost.ts";
import { SECRET_HEADER, freePort, startGateProcess, writeSecretFile, type GateProcess } from "./support/gate-process.ts";

const OLD_SECRET = "old-secret-Zx8Qw2Er4Ty6Ui8Op0As2Df4Gh=";
const NEW_SECRET = "new-secret-Lk9Jh7Gf5Ds3Ap1Qw9Er7Ty5Ui=";

let mattermost: StandInMattermost;

beforeAll(async () => {
  mattermost = await startStandInMattermost({ quiet: true });
});
afterAll(async () => {
  await mattermost?.close();
});
beforeEach(() => mattermost.clear());

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "preauth-gate-ops-"));
}

interface SecretSpec {
  label: string;
  value: string;
  expires?: string;
}

/** Writes a TOML config with the given secrets; the secret values go to files of their own. */
function writeConfig(dir: string, secrets: SecretSpec[], extra: string[] = []): string {
  const lines = [...extra];
  for (const secret of secrets) {
    const file = join(dir, `secret-${secret.label}`);
    writeFileSync(file, `${secret.value}\n`, { mode: 0o600 });
    lines.push("[[secrets]]", `label = "${secret.label}"`, `file = "${file}"`);
    if (secret.expires) lines.push(`expires = "${secret.expires}"`);
  }
  const path = join(dir, "gate.toml");
  writeFileSync(path, `${lines.join("\n")}\n`);
  return path;
}

async function status(gate: GateProcess, secret: string | null, path = "/api/v4/users/me"): Promise<number> {
  const response = await fetch(`${gate.url}${path}`, { headers: secret === null ? {} : { [SECRET_HEADER]: secret } });
  await response.arrayBuffer();
  return response.status;
}

async function waitForOutput(gate: GateProcess, text: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!gate.output().includes(text)) {
    if (Date.now() > deadline) throw new Error(`gate output never contained ${text}:\n${gate.output()}`);
    await Bun.sleep(20);
  }
}

function countOccurrences(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

function openWebSocket(gate: GateProcess, secret: string): Promise<{ socket: WebSocket; messages: string[]; closeCode: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${gate.port}/api/v4/websocket`, {
      headers: { [SECRET_HEADER]: secret, host: `127.0.0.1:${gate.port}`, origin: `http://127.0.0.1:${gate.port}` },
    } as unknown as string[]);
    const messages: string[] = [];
    const closeCode = new Promise<number>((resolveClose) => socket.addEventListener("close", (event) => resolveClose(event.code)));
    socket.addEventListener("message", (event) => messages.push(String(event.data)));
    socket.addEventListener("open", () => resolve({ socket, messages, closeCode }));
    socket.addEventListener("error", () => reject(new Error("websocket failed")));
  });
}

async function echoes(connection: { socket: WebSocket; messages: string[] }, text: string): Promise<boolean> {
  connection.socket.send(text);
  const deadline = Date.now() + 3000;
  while (!connection.messages.includes(text)) {
    if (Date.now() > deadline) return false;
    await Bun.sleep(10);
  }
  return true;
}

describe("secret rotation", () => {
  test("reload under load drops nothing and rotates the secret", async () => {
    const dir = tempDir();
    const config = writeConfig(dir, [{ label: "2026-q3", value: OLD_SECRET }]);
    const gate = await startGateProcess({ upstream: mattermost.url, secretFile: null, args: ["--config", config] });
    try {
      const sockets = await Promise.all([1, 2, 3].map(() => openWebSocket(gate, OLD_SECRET)));
      let running = true;
      const failures: string[] = [];
      let sent = 0;
      const load = (async () => {
        while (running) {
          const code = await status(gate, OLD_SECRET).catch((error) => String(error));
          sent++;
          if (code !== 200) failures.push(String(code));
        }
      })();

      // Step 1: add the new secret next to the old one.
      writeConfig(dir, [{ label: "2026-q4", value: NEW_SECRET }, { label: "2026-q3", value: OLD_SECRET }]);
      gate.process.kill("SIGHUP");
      await waitForOutput(gate, '"configuration reloaded"');
      expect(await status(gate, NEW_SECRET)).toBe(200);
      await Bun.sleep(300);
      running = false;
      await load;
      expect(sent).toBeGreaterThan(10);
      expect(failures).toEqual([]);
      for (const connection of sockets) expect(await echoes(connection, "after first reload")).toBe(true);

      // Step 2: retire the old secret; open WebSockets stay up.
      writeConfig(dir, [{ label: "2026-q4", value: NEW_SECRET }]);
      gate.process.kill("SIGHUP");
      const deadline = Date.now() + 5000;
      while (countOccurrences(gate.output(), '"configuration reloaded"') < 2 && Date.now() < deadline) await Bun.sleep(20);
      expect(await status(gate, OLD_SECRET)).toBe(403);
      expect(await status(gate, NEW_SECRET)).toBe(200);
      for (const connection of sockets) expect(await echoes(connection, "after second reload")).toBe(true);
      for (const connection of sockets) connection.socket.close();
    } finally {
      await gate.stop();
    }
    expect(gate.output()).not.toContain(OLD_SECRET);
    expect(gate.output()).not.toContain(NEW_SECRET);
  }, 60_000);

  test("invalid configuration on reload keeps the running one", async () => {
    const dir = tempDir();
    const config = writeConfig(dir, [{ label: "current", value: OLD_SECRET }]);
    const gate = await startGateProcess({ upstream: mattermost.url, secretFile: null, args: ["--config", config] });
    try {
      writeFileSync(config, 'listen = "nowhere"\nunknown_key = 1\n');
      gate.process.kill("SIGHUP");
      await waitForOutput(gate, "reload rejected");
      expect(gate.output()).toContain('unknown key \\"unknown_key\\"');
      expect(gate.output()).toContain("no secret configured");
      expect(await status(gate, OLD_SECRET)).toBe(200);
      expect(gate.process.exitCode).toBeNull();
    } finally {
      await gate.stop();
    }
  });

  test("expired secret is rejected with reason expired", async () => {
    const dir = tempDir();
    const soon = new Date(Date.now() + 1500).toISOString();
    const config = writeConfig(dir, [
      { label: "current", value: NEW_SECRET },
      { label: "retiring", value: OLD_SECRET, expires: soon },
    ]);
    const gate = await startGateProcess({ upstream: mattermost.url, secretFile: null, args: ["--config", config] });
    try {
      expect(await status(gate, OLD_SECRET)).toBe(200);
      await Bun.sleep(Math.max(0, Date.parse(soon) - Date.now()) + 100);
      expect(await status(gate, OLD_SECRET)).toBe(403);
      expect(await status(gate, NEW_SECRET)).toBe(200);
      await waitForOutput(gate, '"reason":"expired"');
    } finally {
      await gate.stop();
    }
  });
});

describe("shutdown", () => {
  test("SIGTERM lets requests in flight finish and closes WebSockets with 1001", async () => {
    const secretFile = writeSecretFile(OLD_SECRET);
    const gate = await startGateProcess({ upstream: mattermost.url, secretFile, args: ["--shutdown-grace", "10"] });
    const connection = await openWebSocket(gate, OLD_SECRET);
    const slow = fetch(`${gate.url}/api/v4/slow?ms=1500`, { headers: { [SECRET_HEADER]: OLD_SECRET } });
    await Bun.sleep(200);
    gate.process.kill("SIGTERM");
    expect(await connection.closeCode).toBe(1001);
    const response = await slow;
    expect(response.status).toBe(200);
    expect(await response.text()).toBe("slow done");
    expect(await gate.process.exited).toBe(0);
    expect(gate.output()).toContain('"gate stopped"');
    await expect(fetch(`${gate.url}/api/v4/config/client`)).rejects.toThrow();
  });

  test("request longer than the grace period is cut off", async () => {
    const secretFile = writeSecretFile(OLD_SECRET);
    const gate = await startGateProcess({ upstream: mattermost.url, secretFile, args: ["--shutdown-grace", "1"] });
    const slow = fetch(`${gate.url}/api/v4/slow?ms=5000`, { headers: { [SECRET_HEADER]: OLD_SECRET } }).then(
      (response) => response.status,
      () => "cut off",
    );
    await Bun.sleep(200);
    const started = Date.now();
    gate.process.kill("SIGTERM");
    expect(await gate.process.exited).toBe(0);
    expect(Date.now() - started).toBeLessThan(4000);
    expect(await slow).toBe("cut off");
    expect(gate.output()).toContain("requests still in flight after the grace period");
  });
});

describe("metrics and logs", () => {
  test("metrics count what was sent", async () => {
    const adminPort = await freePort();
    const dir = tempDir();
    const config = writeConfig(dir, [
      { label: "2026-q4", value: NEW_SECRET },
      { label: "2026-q3", value: OLD_SECRET, expires: "2020-01-01T00:00:00Z" },
    ]);
    const gate = await startGateProcess({
      upstream: mattermost.url,
      secretFile: null,
      args: ["--config", config, "--admin-listen", `127.0.0.1:${adminPort}`],
    });
    try {
      for (let index = 0; index < 3; index++) expect(await status(gate, NEW_SECRET)).toBe(200);
      for (let index = 0; index < 2; index++) expect(await status(gate, null)).toBe(403);
      expect(await status(gate, "not-the-secret-at-all-1234")).toBe(403);
      expect(await status(gate, OLD_SECRET)).toBe(403);
      expect(await status(gate, `${NEW_SECRET}, ${NEW_SECRET}`)).toBe(403);
      expect(await status(gate, null, "/api/v4/config/client")).toBe(200);

      const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      expect(metrics).toContain('preauth_gate_requests_total{outcome="allowed",reason=""} 3');
      expect(metrics).toContain('preauth_gate_requests_total{outcome="whitelisted",reason=""} 1');
      expect(metrics).toContain('preauth_gate_requests_total{outcome="rejected",reason="missing"} 2');
      expect(metrics).toContain('preauth_gate_requests_total{outcome="rejected",reason="wrong"} 1');
      expect(metrics).toContain('preauth_gate_requests_total{outcome="rejected",reason="expired"} 1');
      expect(metrics).toContain('preauth_gate_requests_total{outcome="rejected",reason="duplicated"} 1');
      expect(metrics).toContain('preauth_gate_accepted_requests_total{secret="2026-q4"} 3');
      expect(metrics).toContain('preauth_gate_accepted_requests_total{secret="2026-q3"} 0');
      expect(metrics).toContain("preauth_gate_request_duration_seconds_count 9");
      expect(metrics).not.toContain(NEW_SECRET);

      expect((await fetch(`http://127.0.0.1:${adminPort}/healthz`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status).toBe(200);
      // The admin routes are not served on the gate's own listener.
      expect(await status(gate, null, "/metrics")).toBe(403);
    } finally {
      await gate.stop();
    }
  });

  test("websocket gauge follows open tunnels", async () => {
    const adminPort = await freePort();
    const secretFile = writeSecretFile(NEW_SECRET);
    const gate = await startGateProcess({ upstream: mattermost.url, secretFile, args: ["--admin-listen", `127.0.0.1:${adminPort}`] });
    const metricsText = async () => (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    try {
      const connection = await openWebSocket(gate, NEW_SECRET);
      expect(await echoes(connection, "hello")).toBe(true);
      expect(await metricsText()).toContain("preauth_gate_websocket_connections 1");
      connection.socket.close();
      await connection.closeCode;
      await Bun.sleep(100);
      const afterClose = await metricsText();
      expect(afterClose).toContain("preauth_gate_websocket_connections 0");
      expect(afterClose).not.toMatch(/preauth_gate_bytes_total\{direction="in"\} 0\n/);
      expect(afterClose).not.toMatch(/preauth_gate_bytes_total\{direction="out"\} 0\n/);

      // A handshake that Mattermost refuses never counts as an open WebSocket.
      const refused = new WebSocket(`ws://127.0.0.1:${gate.port}/api/v4/websocket`, {
        headers: { [SECRET_HEADER]: NEW_SECRET, host: `127.0.0.1:${gate.port}`, origin: "https://evil.example" },
      } as unknown as string[]);
      await new Promise((resolve) => refused.addEventListener("close", resolve));
      expect(await metricsText()).toContain("preauth_gate_websocket_connections 0");
    } finally {
      await gate.stop();
    }
  });

  test("repeated rejections are summarised and no secret is logged", async () => {
    const secretFile = writeSecretFile(NEW_SECRET);
    const gate = await startGateProcess({ upstream: mattermost.url, secretFile });
    for (let index = 0; index < 20; index++) {
      expect(await status(gate, "wrong-secret-value-000000000")).toBe(403);
    }
    expect(await status(gate, NEW_SECRET, "/api/v4/users/me?access_token=query-token-value")).toBe(200);
    await fetch(`${gate.url}/api/v4/users/me`, { headers: { cookie: "MMAUTHTOKEN=cookie-token-value", authorization: "Bearer bearer-token-value" } });
    await gate.stop();
    const output = gate.output();
    expect(countOccurrences(output, '"reason":"wrong","msg":"request rejected"')).toBe(1);
    expect(output).toContain('"reason":"wrong","suppressed":19');
    for (const leaked of [NEW_SECRET, "wrong-secret-value", "query-token-value", "cookie-token-value", "bearer-token-value"]) {
      expect(output).not.toContain(leaked);
    }
    for (const line of output.trim().split("\n")) expect(() => JSON.parse(line)).not.toThrow();
  });
});

describe("TLS", () => {
  function peerCommonName(port: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
        const subject = socket.getPeerCertificate().subject as unknown as { CN: string };
        socket.end();
        resolve(subject.CN);
      });
      socket.on("error", reject);
    });
  }

  test("serves HTTPS, sets X-Forwarded-Proto and reloads the certificate", async () => {
    const dir = tempDir();
    const first = makeCertificate(dir, "first");
    const certPath = join(dir, "live.crt");
    const keyPath = join(dir, "live.key");
    writeFileSync(certPath, await Bun.file(first.cert).text());
    writeFileSync(keyPath, await Bun.file(first.key).text());
    const secretFile = writeSecretFile(NEW_SECRET);
    const gate = await startGateProcess({
      upstream: mattermost.url,
      secretFile,
      args: ["--tls-cert", certPath, "--tls-key", keyPath],
    });
    try {
      const httpsUrl = `https://127.0.0.1:${gate.port}`;
      const tlsOptions = { tls: { rejectUnauthorized: false } } as RequestInit;
      const rejected = await fetch(`${httpsUrl}/api/v4/users/me`, tlsOptions);
      expect(rejected.status).toBe(403);
      expect(rejected.headers.get("x-reject-reason")).toBe("pre-auth");
      const allowed = await fetch(`${httpsUrl}/api/v4/users/me`, { ...tlsOptions, headers: { [SECRET_HEADER]: NEW_SECRET } });
      expect(allowed.status).toBe(200);
      expect(mattermost.received.at(-1)!.headers["x-forwarded-proto"]).toEqual(["https"]);
      expect(await peerCommonName(gate.port)).toBe("first");

      const second = makeCertificate(dir, "second");
      writeFileSync(certPath, await Bun.file(second.cert).text());
      writeFileSync(keyPath, await Bun.file(second.key).text());
      gate.process.kill("SIGHUP");
      await waitForOutput(gate, '"new_listener":true');
      expect(await peerCommonName(gate.port)).toBe("second");
      const afterReload = await fetch(`${httpsUrl}/api/v4/users/me`, { ...tlsOptions, headers: { [SECRET_HEADER]: NEW_SECRET } });
      expect(afterReload.status).toBe(200);
    } finally {
      await gate.stop();
    }
  });

  test("TLS needs both certificate and key", () => {
    const result = Bun.spawnSync([join(import.meta.dir, "..", "dist", "preauth-gate"), "check", "--tls-cert", "/nonexistent.crt"], {
      env: { PREAUTH_GATE_SECRET: NEW_SECRET, PATH: process.env.PATH ?? "" },
    });
    expect(result.exitCode).toBe(2);
    expect(result.stderr.toString()).toContain("--tls-cert and --tls-key go together");
  });
});

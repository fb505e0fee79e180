// Tests of running the gate under systemd: the unit file passes `systemd-analyze verify`
// and keeps its hardening, scripts/install.sh installs into a temporary root, and the
// compiled gate reads its secret from $CREDENTIALS_DIRECTORY as LoadCredential= provides it.
// systemd-analyze and strace come from Debian's packages, installed here when missing.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "bun";
import { optionSpec } from "../src/options.ts";
import { secretProblem } from "../src/secrets.ts";
import { GATE_BINARY, SECRET_HEADER, TEST_SECRET, freePort, startGateProcess } from "./support/gate-process.ts";

const ROOT = join(import.meta.dir, "..");
const UNIT_FILE = join(ROOT, "scripts", "preauth-gate.service");
const UNIT_NAME = "preauth-gate.service";
const INSTALL_SCRIPT = join(ROOT, "scripts", "install.sh");
const INSTALLED_BINARY = "/usr/local/bin/preauth-gate";
/** Maximum shutdown grace the unit allows for. TimeoutStopSec must exceed it. */
const MAX_GRACE_SECONDS = 30;
/** For tests that may first install a Debian package with apt-get. */
const APT_TIMEOUT_MS = 240_000;
/** For tests that copy the 110 MB binary or start the gate. */
const PROCESS_TIMEOUT_MS = 30_000;

const scratch = mkdtempSync(join(tmpdir(), "preauth-gate-systemd-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let aptListsUpdated = false;

/**
 * Returns the path of `command`, installing `debianPackage` with apt-get when it is not on
 * PATH. Throws with apt-get's output when that fails, so the test fails with the reason.
 */
function ensureCommand(command: string, debianPackage: string): string {
  const existing = Bun.which(command);
  if (existing !== null) return existing;
  const steps = [
    ...(aptListsUpdated ? [] : [["apt-get", "update"]]),
    ["apt-get", "install", "-y", "--no-install-recommends", debianPackage],
  ];
  for (const argv of steps) {
    const result = Bun.spawnSync(argv, {
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      stdout: "pipe",
      stderr: "pipe",
    });
    if (result.exitCode !== 0) {
      const output = `${result.stdout.toString()}${result.stderr.toString()}`.slice(-2000);
      throw new Error(`${command} is not on PATH, and "${argv.join(" ")}" failed with exit status ${result.exitCode}:\n${output}`);
    }
    if (argv[1] === "update") aptListsUpdated = true;
  }
  const installed = Bun.which(command);
  if (installed === null) throw new Error(`apt-get installed ${debianPackage}, but ${command} is still not on PATH`);
  return installed;
}

/** Parses a unit file into "Section.Key" → assigned values in file order, skipping comments. */
function parseUnit(text: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  let section = "";
  for (const rawLine of text.split("\n")) {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header !== null) {
      section = header[1]!;
      continue;
    }
    const split = line.indexOf("=");
    const key = `${section}.${line.slice(0, split).trim()}`;
    settings.set(key, [...(settings.get(key) ?? []), line.slice(split + 1).trim()]);
  }
  return settings;
}

/** Writes the unit to a fresh directory under its own name, with ExecStart on dist/preauth-gate. */
function unitCopyForVerify(extraServiceLines: string[] = []): string {
  const original = readFileSync(UNIT_FILE, "utf8");
  const execStart = new RegExp(`^ExecStart=${INSTALLED_BINARY} `, "gm");
  expect(original.match(execStart)?.length).toBe(1);
  let copy = original.replace(execStart, `ExecStart=${GATE_BINARY} `);
  if (extraServiceLines.length > 0) copy = copy.replace("[Service]\n", `[Service]\n${extraServiceLines.join("\n")}\n`);
  const dir = mkdtempSync(join(scratch, "unit-"));
  const path = join(dir, UNIT_NAME);
  writeFileSync(path, copy);
  return path;
}

/** Runs `systemd-analyze verify` and returns its exit status and the output lines naming the unit. */
function verifyUnit(path: string): { exitCode: number | null; linesAboutUnit: string[] } {
  const systemdAnalyze = ensureCommand("systemd-analyze", "systemd");
  const result = Bun.spawnSync([systemdAnalyze, "verify", path], { stdout: "pipe", stderr: "pipe" });
  const output = `${result.stdout.toString()}\n${result.stderr.toString()}`;
  // The verifier may also warn about other units installed on this machine.
  const linesAboutUnit = output.split("\n").filter((line) => line.includes(UNIT_NAME));
  return { exitCode: result.exitCode, linesAboutUnit };
}

describe("unit file", () => {
  const unit = parseUnit(readFileSync(UNIT_FILE, "utf8"));
  const lines = readFileSync(UNIT_FILE, "utf8").split("\n");

  test("systemd-analyze verify accepts it", () => {
    const { exitCode, linesAboutUnit } = verifyUnit(unitCopyForVerify());
    expect(linesAboutUnit).toEqual([]);
    expect(exitCode).toBe(0);
  }, APT_TIMEOUT_MS);

  test("systemd-analyze verify reports an unknown key", () => {
    // Shows that the check above would see a warning about the unit.
    const { linesAboutUnit } = verifyUnit(unitCopyForVerify(["NoSuchSetting=yes"]));
    expect(linesAboutUnit.join("\n")).toContain("NoSuchSetting");
  }, APT_TIMEOUT_MS);

  const expected: [key: string, values: string[]][] = [
    ["Unit.Wants", ["network-online.target"]],
    ["Unit.After", ["network-online.target"]],
    ["Service.ExecStart", [`${INSTALLED_BINARY} serve`]],
    ["Service.EnvironmentFile", ["-/etc/preauth-gate/preauth-gate.env"]],
    ["Service.LoadCredential", ["preauth-secret:/etc/preauth-gate/secret"]],
    ["Service.ExecReload", ["/bin/kill -HUP $MAINPID"]],
    ["Service.Restart", ["on-failure"]],
    ["Service.RestartPreventExitStatus", ["2"]],
    ["Service.KillSignal", ["SIGTERM"]],
    ["Service.DynamicUser", ["yes"]],
    ["Service.NoNewPrivileges", ["yes"]],
    ["Service.ProtectSystem", ["strict"]],
    ["Service.ProtectHome", ["yes"]],
    ["Service.PrivateTmp", ["yes"]],
    ["Service.PrivateDevices", ["yes"]],
    ["Service.CapabilityBoundingSet", [""]],
    ["Service.AmbientCapabilities", [""]],
    ["Service.RestrictAddressFamilies", ["AF_INET AF_INET6 AF_UNIX"]],
    ["Service.LockPersonality", ["yes"]],
    ["Service.ProtectKernelTunables", ["yes"]],
    ["Service.ProtectKernelModules", ["yes"]],
    ["Service.ProtectKernelLogs", ["yes"]],
    ["Service.ProtectControlGroups", ["yes"]],
    ["Service.RestrictNamespaces", ["yes"]],
    ["Service.SystemCallArchitectures", ["native"]],
    ["Service.SystemCallFilter", ["@system-service", "~@privileged @resources"]],
    ["Service.SystemCallErrorNumber", ["EPERM"]],
    ["Install.WantedBy", ["multi-user.target"]],
  ];
  test.each(expected)("%s", (key, values) => {
    expect(unit.get(key)).toEqual(values);
  });

  test("MemoryDenyWriteExecute is not set", () => {
    // With it, Bun runs JavaScript without its JIT compiler, as the comment in the unit explains.
    expect(unit.has("Service.MemoryDenyWriteExecute")).toBe(false);
  });

  test("TimeoutStopSec exceeds the shutdown grace", () => {
    const [value] = unit.get("Service.TimeoutStopSec") ?? [];
    const match = /^(\d+)s$/.exec(value ?? "");
    expect(match).not.toBeNull();
    const timeoutSeconds = Number(match![1]);
    const defaultGraceSeconds = Number(optionSpec("shutdown-grace").defaultValue);
    expect(defaultGraceSeconds).toBeLessThanOrEqual(MAX_GRACE_SECONDS);
    expect(timeoutSeconds).toBeGreaterThan(MAX_GRACE_SECONDS);
    expect(timeoutSeconds).toBeLessThanOrEqual(MAX_GRACE_SECONDS + 15);
  });

  test.each([
    ["#CapabilityBoundingSet=CAP_NET_BIND_SERVICE"],
    ["#AmbientCapabilities=CAP_NET_BIND_SERVICE"],
    ["#After=mattermost.service"],
  ])("commented alternative %s", (line) => {
    expect(lines).toContain(line);
  });
});

interface InstallRun {
  readonly exitCode: number | null;
  readonly output: string;
  /** Arguments of every systemctl call the script made, one string each. */
  readonly systemctlCalls: string[];
}

/** Runs install.sh with a stand-in systemctl first on PATH that records its calls. */
function runInstall(args: string[], env: Record<string, string> = {}): InstallRun {
  const fakeBin = mkdtempSync(join(scratch, "fake-bin-"));
  const callLog = join(fakeBin, "calls.log");
  writeFileSync(join(fakeBin, "systemctl"), `#!/bin/sh\necho "$*" >> '${callLog}'\n`, { mode: 0o755 });
  const result = Bun.spawnSync(["bash", INSTALL_SCRIPT, ...args], {
    env: { PATH: `${fakeBin}:${process.env.PATH ?? "/usr/bin:/bin"}`, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const systemctlCalls = existsSync(callLog) ? readFileSync(callLog, "utf8").trim().split("\n") : [];
  return { exitCode: result.exitCode, output: `${result.stdout.toString()}${result.stderr.toString()}`, systemctlCalls };
}

function modeOf(path: string): string {
  return (statSync(path).mode & 0o7777).toString(8).padStart(4, "0");
}

function sameBytes(first: string, second: string): boolean {
  return Bun.spawnSync(["cmp", "-s", first, second]).exitCode === 0;
}

describe("install.sh", () => {
  function paths(root: string) {
    return {
      binary: join(root, "usr/local/bin/preauth-gate"),
      unit: join(root, "etc/systemd/system/preauth-gate.service"),
      configDir: join(root, "etc/preauth-gate"),
      secret: join(root, "etc/preauth-gate/secret"),
      env: join(root, "etc/preauth-gate/preauth-gate.env"),
    };
  }

  test("fresh install creates files with modes", () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const run = runInstall(["--root", root, "--binary", GATE_BINARY]);
    const installed = paths(root);
    expect(run.output).not.toContain("install.sh: warning");
    expect(run.exitCode).toBe(0);

    expect(modeOf(installed.binary)).toBe("0755");
    expect(sameBytes(installed.binary, GATE_BINARY)).toBe(true);
    expect(modeOf(installed.unit)).toBe("0644");
    expect(readFileSync(installed.unit, "utf8")).toBe(readFileSync(UNIT_FILE, "utf8"));
    expect(statSync(installed.configDir).isDirectory()).toBe(true);
    expect(modeOf(installed.configDir)).toBe("0750");
    expect(modeOf(installed.secret)).toBe("0600");
    expect(modeOf(installed.env)).toBe("0640");

    const secret = readFileSync(installed.secret, "latin1").replace(/\n$/, "");
    expect(secretProblem(secret)).toBeNull();
    expect(Buffer.from(secret, "base64").length).toBe(32);
    expect(run.output).not.toContain(secret);

    const settings = readFileSync(installed.env, "utf8");
    expect(settings).toContain("\nPREAUTH_GATE_LISTEN=127.0.0.1:8066\n");
    expect(settings).toContain("\nPREAUTH_GATE_UPSTREAM=http://127.0.0.1:8065\n");
    expect(settings).not.toContain(secret);
    expect(run.systemctlCalls).toEqual([]);
  }, PROCESS_TIMEOUT_MS);

  test("second run keeps everything", () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const installed = paths(root);
    expect(runInstall(["--root", root, "--binary", GATE_BINARY]).exitCode).toBe(0);
    const secret = readFileSync(installed.secret, "latin1");
    const settings = readFileSync(installed.env, "utf8");

    const again = runInstall(["--root", root, "--binary", GATE_BINARY]);
    expect(again.exitCode).toBe(0);
    expect(again.output).toContain("kept the existing secret");
    expect(again.output).toContain("is already this version");
    expect(again.output).not.toContain(secret.trim());
    expect(readFileSync(installed.secret, "latin1")).toBe(secret);
    expect(readFileSync(installed.env, "utf8")).toBe(settings);
    expect(modeOf(installed.secret)).toBe("0600");
    expect(modeOf(installed.configDir)).toBe("0750");
    expect(sameBytes(installed.binary, GATE_BINARY)).toBe(true);
    expect(again.systemctlCalls).toEqual([]);
  }, PROCESS_TIMEOUT_MS);

  test("existing secret and settings survive", () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const installed = paths(root);
    mkdirSync(installed.configDir, { recursive: true, mode: 0o750 });
    writeFileSync(installed.secret, `${TEST_SECRET}\n`, { mode: 0o600 });
    writeFileSync(installed.env, "PREAUTH_GATE_LISTEN=0.0.0.0:8066\n", { mode: 0o640 });

    const run = runInstall(["--root", root, "--binary", GATE_BINARY]);
    expect(run.exitCode).toBe(0);
    expect(readFileSync(installed.secret, "latin1")).toBe(`${TEST_SECRET}\n`);
    expect(readFileSync(installed.env, "utf8")).toBe("PREAUTH_GATE_LISTEN=0.0.0.0:8066\n");
    expect(run.output).not.toContain(TEST_SECRET);
  }, PROCESS_TIMEOUT_MS);

  test("readable secret gets a warning", () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const installed = paths(root);
    mkdirSync(installed.configDir, { recursive: true });
    writeFileSync(installed.secret, `${TEST_SECRET}\n`);
    chmodSync(installed.secret, 0o644);

    const run = runInstall(["--root", root, "--binary", GATE_BINARY]);
    expect(run.exitCode).toBe(0);
    expect(run.output).toContain(`warning: ${installed.secret} has mode 644`);
    expect(run.output).not.toContain(TEST_SECRET);
  }, PROCESS_TIMEOUT_MS);

  test("DESTDIR works like --root", () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const run = runInstall(["--binary", GATE_BINARY], { DESTDIR: root });
    expect(run.exitCode).toBe(0);
    expect(existsSync(paths(root).unit)).toBe(true);
    expect(run.systemctlCalls).toEqual([]);
  }, PROCESS_TIMEOUT_MS);

  test("missing binary is an error", () => {
    const root = mkdtempSync(join(scratch, "root-"));
    const missing = join(scratch, "no-such-binary");
    const run = runInstall(["--root", root, "--binary", missing]);
    expect(run.exitCode).toBe(1);
    expect(run.output).toContain(`binary ${missing} not found`);
    expect(existsSync(join(root, "etc"))).toBe(false);
  });

  test("unknown argument is a usage error", () => {
    const run = runInstall(["--no-such-option"]);
    expect(run.exitCode).toBe(2);
    expect(run.output).toContain('unknown argument "--no-such-option"');
  });
});

describe("systemd credentials", () => {
  const SECOND_SECRET = "Zq8Lm3Rt6Yv1Xc4Bn7Hs2Kd5Fg9Wj0Pa3Ue6Io1Ty4=";
  const UNRELATED_VALUE = "Nn5Mm4Ll3Kk2Jj1Hh0Gg9Ff8Ee7Dd6Cc5Bb4Aa3Zz2=";
  let upstream: Server<undefined>;

  beforeAll(() => {
    upstream = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("upstream reached") });
  });
  afterAll(() => upstream?.stop(true));

  test("gate reads preauth-secret* from CREDENTIALS_DIRECTORY", async () => {
    // The layout LoadCredential= gives: one file per credential, named by its id.
    const credentials = mkdtempSync(join(scratch, "credentials-"));
    writeFileSync(join(credentials, "preauth-secret"), `${TEST_SECRET}\n`, { mode: 0o400 });
    writeFileSync(join(credentials, "preauth-secret-2026-q4"), `${SECOND_SECRET}\n`, { mode: 0o400 });
    writeFileSync(join(credentials, "tls-key"), `${UNRELATED_VALUE}\n`, { mode: 0o400 });

    const gate = await startGateProcess({
      upstream: upstream.url.origin,
      secretFile: null,
      env: { CREDENTIALS_DIRECTORY: credentials },
    });
    try {
      const target = `${gate.url}/api/v4/users/me`;

      const first = await fetch(target, { headers: { [SECRET_HEADER]: TEST_SECRET } });
      expect(first.status).toBe(200);
      expect(await first.text()).toBe("upstream reached");

      const second = await fetch(target, { headers: { [SECRET_HEADER]: SECOND_SECRET } });
      expect(second.status).toBe(200);
      expect(await second.text()).toBe("upstream reached");

      const missing = await fetch(target);
      expect(missing.status).toBe(403);
      expect(missing.headers.get("x-reject-reason")).toBe("pre-auth");
      await missing.text();

      const unrelated = await fetch(target, { headers: { [SECRET_HEADER]: UNRELATED_VALUE } });
      expect(unrelated.status).toBe(403);
      expect(unrelated.headers.get("x-reject-reason")).toBe("pre-auth");
      await unrelated.text();
    } finally {
      await gate.stop();
    }
    expect(gate.output()).not.toContain(TEST_SECRET);
    expect(gate.output()).not.toContain(SECOND_SECRET);
  }, PROCESS_TIMEOUT_MS);

  // `systemctl reload` sends SIGHUP (ExecReload= in the unit). A gate that died of it
  // would stay down, because Restart=on-failure counts SIGHUP as a clean exit.
  test("gate keeps running after SIGHUP", async () => {
    const gate = await startGateProcess({ upstream: upstream.url.origin });
    try {
      gate.process.kill("SIGHUP");
      await Bun.sleep(500);
      expect(gate.process.signalCode).toBeNull();
      expect(gate.process.exitCode).toBeNull();
      const response = await fetch(`${gate.url}/api/v4/users/me`, { headers: { [SECRET_HEADER]: TEST_SECRET } });
      expect(response.status).toBe(200);
      await response.text();
    } finally {
      await gate.stop();
    }
  }, PROCESS_TIMEOUT_MS);
});

/** Expands a systemd system call group such as "@system-service" into system call names. */
function expandSyscallGroup(group: string, groups: Map<string, string[]>): Set<string> {
  const names = new Set<string>();
  for (const member of groups.get(group) ?? []) {
    if (member.startsWith("@")) for (const name of expandSyscallGroup(member, groups)) names.add(name);
    else names.add(member);
  }
  return names;
}

/** Reads every group from `systemd-analyze syscall-filter`: a "@name" line, then indented members. */
function syscallGroups(): Map<string, string[]> {
  const systemdAnalyze = ensureCommand("systemd-analyze", "systemd");
  const listing = Bun.spawnSync([systemdAnalyze, "syscall-filter"], { stdout: "pipe" }).stdout.toString();
  const groups = new Map<string, string[]>();
  let current: string[] | null = null;
  for (const line of listing.split("\n")) {
    if (line.startsWith("@")) {
      current = [];
      groups.set(line.trim(), current);
    } else if (current !== null && /^\s+[@a-z0-9_-]+$/.test(line)) {
      current.push(line.trim());
    }
  }
  return groups;
}

/** Returns the process id that strace wrote first in `trace`: the traced gate's. */
function firstTracedPid(trace: string): number | null {
  if (!existsSync(trace)) return null;
  const pid = Number(/^(\d+) /.exec(readFileSync(trace, "utf8"))?.[1]);
  return pid > 0 ? pid : null;
}

describe("system call filter", () => {
  // Processes to kill when the test ends without its own cleanup, as on a timeout,
  // because strace does not pass the test runner's SIGTERM on to the gate.
  const leftovers: number[] = [];
  afterAll(() => {
    for (const pid of leftovers) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  });

  test("gate needs only the unit's allowed calls", async () => {
    const strace = ensureCommand("strace", "strace");
    const groups = syscallGroups();
    const allowed = expandSyscallGroup("@system-service", groups);
    for (const denied of [...expandSyscallGroup("@privileged", groups), ...expandSyscallGroup("@resources", groups)]) {
      allowed.delete(denied);
    }
    expect(allowed.size).toBeGreaterThan(100);

    // An upstream that responds with a body large enough to stream and echoes WebSocket messages.
    const upstream = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(request, server) {
        if (server.upgrade(request)) return undefined;
        return new Response("x".repeat(2 * 1024 * 1024));
      },
      websocket: {
        message(socket, message) {
          socket.send(message);
        },
      },
    });
    const port = await freePort();
    const traceDir = mkdtempSync(join(scratch, "trace-"));
    const trace = join(traceDir, "strace.txt");
    // The secret comes in as under systemd, so that reading the credentials is traced too.
    const credentials = join(traceDir, "credentials");
    mkdirSync(credentials);
    writeFileSync(join(credentials, "preauth-secret"), `${TEST_SECRET}\n`, { mode: 0o400 });
    const gate = Bun.spawn(
      [strace, "-f", "-qq", "-o", trace, GATE_BINARY, "serve", "--listen", `127.0.0.1:${port}`, "--upstream", upstream.url.origin],
      {
        stdout: "pipe",
        stderr: "pipe",
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CREDENTIALS_DIRECTORY: credentials },
      },
    );
    leftovers.push(gate.pid);
    try {
      const started = await waitForLine(gate.stdout, '"gate started"', 20_000);
      expect(started).toBe(true);
      const startedPid = firstTracedPid(trace);
      if (startedPid !== null) leftovers.push(startedPid);
      const url = `http://127.0.0.1:${port}/api/v4/users/me`;
      const withSecret = await fetch(url, { headers: { [SECRET_HEADER]: TEST_SECRET } });
      expect((await withSecret.text()).length).toBe(2 * 1024 * 1024);
      const upload = await fetch(url, { method: "POST", body: "y".repeat(100_000), headers: { [SECRET_HEADER]: TEST_SECRET } });
      await upload.text();
      const rejected = await fetch(url, { method: "POST", body: "y".repeat(100_000) });
      expect(rejected.status).toBe(403);
      await rejected.text();
      expect(await echoOverWebSocket(`ws://127.0.0.1:${port}/api/v4/websocket`, "ping")).toBe("ping");
    } finally {
      // Signal the gate itself, as systemd would, so that the shutdown is traced too.
      const gatePid = firstTracedPid(trace);
      if (gatePid !== null) process.kill(gatePid, "SIGTERM");
      else gate.kill("SIGKILL");
      await gate.exited;
      upstream.stop(true);
    }

    const used = new Set<string>();
    for (const line of readFileSync(trace, "utf8").split("\n")) {
      const call = /^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]/.exec(line);
      if (call !== null) used.add(call[1]!);
    }
    // execve is strace starting the gate. systemd applies the filter after that call.
    used.delete("execve");
    expect(used.size).toBeGreaterThan(20);
    expect([...used].filter((name) => !allowed.has(name)).sort()).toEqual([]);
  }, APT_TIMEOUT_MS);
});

/** Reads `stream` until the output contains `text`. Returns false when the time runs out first. */
async function waitForLine(stream: ReadableStream<Uint8Array>, text: string, timeoutMs: number): Promise<boolean> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline) {
      const chunk = await Promise.race([reader.read(), Bun.sleep(deadline - Date.now()).then(() => null)]);
      if (chunk === null || chunk.done) return false;
      seen += decoder.decode(chunk.value, { stream: true });
      if (seen.includes(text)) return true;
    }
    return false;
  } finally {
    reader.releaseLock();
  }
}

/** Sends one message through the gate's WebSocket bridge and returns the echo. */
function echoOverWebSocket(url: string, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers: { [SECRET_HEADER]: TEST_SECRET } });
    const timer = setTimeout(() => reject(new Error(`no WebSocket echo from ${url} within 10 s`)), 10_000);
    socket.onopen = () => socket.send(message);
    socket.onmessage = (event) => {
      clearTimeout(timer);
      socket.close();
      resolve(String(event.data));
    };
    socket.onerror = () => {
      clearTimeout(timer);
      reject(new Error(`WebSocket to ${url} failed`));
    };
  });
}

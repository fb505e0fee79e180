import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig, trustedProxyMatcher, type ConfigSources } from "../src/config.ts";
import { GATE_BINARY, TEST_SECRET, writeSecretFile } from "./support/gate-process.ts";

function problemsOf(sources: ConfigSources): string[] {
  try {
    loadConfig(sources);
  } catch (error) {
    if (error instanceof ConfigError) return [...error.problems];
    throw error;
  }
  return [];
}

const secretFile = writeSecretFile();

describe("configuration", () => {
  test("defaults with one secret file", () => {
    const config = loadConfig({ flags: { "secret-file": [secretFile] }, env: {} });
    expect(config.listen).toEqual({ hostname: "127.0.0.1", port: 8066 });
    expect(config.upstreamOrigin).toBe("http://127.0.0.1:8065");
    expect(config.secrets.map((secret) => secret.label)).toEqual(["preauth-secret"]);
    expect(config.secrets[0]!.value).toBe(TEST_SECRET);
    expect(config.groups).toEqual([]);
    expect(config.websocketExempt).toBe(false);
    expect(config.maxBodyBytes).toBe(1024 ** 3);
    expect(config.upstreamTimeoutMs).toBe(600_000);
    expect(Object.isFrozen(config)).toBe(true);
  });

  test("every problem is reported at once", () => {
    const problems = problemsOf({
      flags: {
        listen: ["localhost"],
        upstream: ["http://mm.example.com/base"],
        allow: ["saml,ldap"],
        "sso-services": ["git-lab"],
        "trusted-proxy": ["10.0.0.0/33"],
        "max-body-size": ["lots"],
        "upstream-timeout": ["0"],
        "idle-timeout": ["1000"],
      },
      env: {},
    });
    expect(problems).toHaveLength(9);
    expect(problems.join("\n")).toContain('--listen "localhost": expected HOST:PORT');
    expect(problems.join("\n")).toContain("a path, query or fragment is not allowed");
    expect(problems.join("\n")).toContain('--allow "ldap": unknown group');
    expect(problems.join("\n")).toContain('--sso-services "git-lab"');
    expect(problems.join("\n")).toContain('--trusted-proxy "10.0.0.0/33"');
    expect(problems.join("\n")).toContain('--max-body-size "lots"');
    expect(problems.join("\n")).toContain('--upstream-timeout "0"');
    expect(problems.join("\n")).toContain('--idle-timeout "1000"');
    expect(problems.join("\n")).toContain("no secret configured");
  });

  const badSecrets: [string, string][] = [
    ["", "is empty"],
    ["short-secret", "is 12 characters long; the minimum is 16"],
    ["has a space in the middle!", "contains whitespace"],
    ["tab\tinside-the-secret", "contains whitespace"],
    ["non-ascii-é-secret-value", "not printable ASCII"],
  ];
  for (const [value, message] of badSecrets) {
    test(`secret rejected: ${message}`, () => {
      const problems = problemsOf({ flags: {}, env: { PREAUTH_GATE_SECRET: value } });
      expect(problems).toHaveLength(1);
      expect(problems[0]).toContain(message);
      if (value !== "") expect(problems[0]).not.toContain(value);
    });
  }

  test("secret file problems name the file, never the value", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-config-"));
    writeFileSync(join(dir, "weak"), "password\n");
    const problems = problemsOf({
      flags: { "secret-file": [join(dir, "weak"), `ops=${join(dir, "missing")}`] },
      env: {},
    });
    expect(problems).toHaveLength(2);
    expect(problems).toContain(`secret "weak" (from ${join(dir, "weak")}) is 8 characters long; the minimum is 16`);
    expect(problems).toContain(`secret "ops": cannot read ${join(dir, "missing")}: ENOENT`);
    expect(problems.join("\n")).not.toContain("password");
  });

  test("labels from LABEL=PATH and systemd credentials", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-credentials-"));
    writeFileSync(join(dir, "preauth-secret"), "another-secret-value-123\n");
    writeFileSync(join(dir, "unrelated"), "x");
    const config = loadConfig({
      flags: { "secret-file": [`2026-q4=${secretFile}`] },
      env: { CREDENTIALS_DIRECTORY: dir },
    });
    expect(config.secrets.map((secret) => secret.label)).toEqual(["2026-q4", "preauth-secret"]);
  });

  test("same secret twice is rejected", () => {
    const problems = problemsOf({ flags: { "secret-file": [secretFile] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(problems).toEqual(['secrets "preauth-secret" and "env" have the same value']);
  });

  test("flags override environment, environment overrides the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-file-"));
    const file = join(dir, "gate.toml");
    writeFileSync(
      file,
      [
        'listen = "127.0.0.1:9000"',
        'upstream = "http://127.0.0.1:9001"',
        'allow = ["saml", "openid"]',
        'sso_services = ["gitlab"]',
        "[[secrets]]",
        'label = "from-file"',
        `file = "${secretFile}"`,
        'expires = "2030-01-01T00:00:00Z"',
      ].join("\n"),
    );
    const config = loadConfig({
      flags: { config: [file], listen: ["127.0.0.1:9100"] },
      env: { PREAUTH_GATE_LISTEN: "127.0.0.1:9200", PREAUTH_GATE_UPSTREAM: "http://127.0.0.1:9300" },
    });
    expect(config.listen.port).toBe(9100);
    expect(config.upstreamOrigin).toBe("http://127.0.0.1:9300");
    expect(config.groups).toEqual(["saml", "openid"]);
    expect(config.ssoServices).toEqual(["gitlab"]);
    expect(config.secrets[0]!.label).toBe("from-file");
    expect(config.secrets[0]!.expiresAt?.toISOString()).toBe("2030-01-01T00:00:00.000Z");
  });

  test("secrets table problems are all reported", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-file-"));
    const file = join(dir, "gate.toml");
    writeFileSync(
      file,
      [
        "[[secrets]]",
        'label = "bad label"',
        `file = "${secretFile}"`,
        'expiry = "2020-01-01T00:00:00Z"',
        "[[secrets]]",
        'label = "ambiguous"',
        `file = "${writeSecretFile("another-secret-value-9876")}"`,
        'expires = "1/2/2027"',
      ].join("\n"),
    );
    const problems = problemsOf({ flags: { config: [file] }, env: {} });
    expect(problems).toContain('config secrets[0]: unknown key "expiry"; expected label, file or expires');
    expect(problems).toContain('secret label "bad label" is invalid; use letters, digits, ".", "_" and "-"');
    expect(problems).toContain('secret "ambiguous": expires "1/2/2027" is not a date-time such as 2027-01-31T00:00:00Z');
    expect(problems).toHaveLength(3);
  });

  test("only expired secrets is a problem", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-file-"));
    const file = join(dir, "gate.toml");
    writeFileSync(file, ["[[secrets]]", `file = "${secretFile}"`, "expires = 2020-01-01T00:00:00Z"].join("\n"));
    const problems = problemsOf({ flags: { config: [file] }, env: {} });
    expect(problems).toEqual(["every configured secret has expired, so no client could get in; add a current secret"]);
  });

  test("invalid TOML is reported without its text", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-file-"));
    const file = join(dir, "secret-by-mistake");
    writeFileSync(file, "abc=defghijklmnopqrstuvwxyz\n");
    const problems = problemsOf({ flags: { config: [file] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toStartWith(`config file ${file}: invalid TOML at line`);
    expect(problems[0]).not.toContain("defghijklmnopqrstuvwxyz");
  });

  test("unknown config file key is a problem", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-file-"));
    const file = join(dir, "gate.toml");
    writeFileSync(file, 'secret = "inline-secrets-are-not-read"\n');
    const problems = problemsOf({ flags: { config: [file] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(problems).toEqual([`config file ${file}: unknown key "secret"`]);
  });

  test("websocket group sets the exemption", () => {
    const config = loadConfig({ flags: { allow: ["websocket", "oauth"] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(config.websocketExempt).toBe(true);
    expect(config.groups).toEqual(["oauth"]);
  });

  test("IPv6 listen address in brackets", () => {
    const config = loadConfig({ flags: { listen: ["[::1]:8443"] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(config.listen).toEqual({ hostname: "::1", port: 8443 });
  });

  test("trusted proxy matcher handles CIDR and mapped IPv4", () => {
    const isTrusted = trustedProxyMatcher(["10.0.0.0/8", "::1"]);
    expect(isTrusted("10.2.3.4")).toBe(true);
    expect(isTrusted("::ffff:10.2.3.4")).toBe(true);
    expect(isTrusted("::1")).toBe(true);
    expect(isTrusted("11.0.0.1")).toBe(false);
    expect(isTrusted("127.0.0.1")).toBe(false);
  });
});

describe("command line of the executable", () => {
  function runGate(args: string[], env: Record<string, string> = {}) {
    const result = Bun.spawnSync([GATE_BINARY, ...args], { env: { PATH: process.env.PATH ?? "", ...env } });
    return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
  }

  test("invalid configuration exits 2 listing every problem", () => {
    const result = runGate(["serve", "--listen", "nowhere", "--upstream", "ftp://x"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("invalid configuration");
    expect(result.stderr).toContain('--listen "nowhere"');
    expect(result.stderr).toContain('--upstream "ftp://x": the scheme must be http or https');
    expect(result.stderr).toContain("no secret configured");
  });

  test("secret on the command line is refused", () => {
    const result = runGate(["--secret", TEST_SECRET]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("--secret is not accepted");
    expect(result.stderr).not.toContain(TEST_SECRET);
  });

  test("unknown option exits 2", () => {
    const result = runGate(["--listn", "127.0.0.1:1"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("--listn");
  });

  test("check prints the rules", () => {
    const result = runGate(["check", "--secret-file", secretFile, "--allow", "saml,oauth", "--sso-services", "gitlab,google"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("location = /login/sso/saml");
    expect(result.stdout).toContain("location ~ ^/api/v3/oauth/(gitlab|google)/complete$");
    expect(result.stdout).not.toContain(TEST_SECRET);
  });

  test("explain shows the raw path", () => {
    const result = runGate(["explain", "/static/../api/v4/users/me", "--secret-file", secretFile]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("path:    /static/../api/v4/users/me");
    expect(result.stdout).toContain("rejected with 403");
  });

  test("explain refuses a non-canonical path with the secret", () => {
    const result = runGate(["explain", "/static/../api/v4/users/me", "--with-secret", "--secret-file", secretFile]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("outcome: 400");
  });

  test("explain keeps only the path of an absolute-form target", () => {
    const result = runGate(["explain", "http://elsewhere.test/static/app.js?v=1", "--secret-file", secretFile]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("path:    /static/app.js");
    expect(result.stdout).toContain("forwarded without the secret");
  });

  test("secret prints 32 random bytes in base64", () => {
    const first = runGate(["secret"]).stdout.trim();
    const second = runGate(["secret"]).stdout.trim();
    expect(Buffer.from(first, "base64")).toHaveLength(32);
    expect(first).not.toBe(second);
  });

  test("help lists every option with its environment variable", () => {
    const result = runGate(["--help"]);
    expect(result.code).toBe(0);
    for (const name of ["--listen", "--upstream", "--secret-file", "--allow", "PREAUTH_GATE_UPSTREAM", "default 600"]) {
      expect(result.stdout).toContain(name);
    }
  });
});

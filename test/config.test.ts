import { describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig, trustedProxyMatcher, type ConfigSources } from "../src/config.ts";
import { makeCertificate } from "./support/certificates.ts";
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

  test("secret file problems name the source, never the value", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-config-"));
    writeFileSync(join(dir, "weak"), "password\n");
    const problems = problemsOf({
      flags: { "secret-file": [join(dir, "weak"), `ops=${join(dir, "missing")}`] },
      env: {},
    });
    expect(problems).toHaveLength(2);
    expect(problems).toContain('secret "weak" (--secret-file (1st)) is 8 characters long; the minimum is 16');
    expect(problems).toContain("--secret-file (2nd): cannot read the file: ENOENT");
    expect(problems.join("\n")).not.toContain("password");
    expect(problems.join("\n")).not.toContain(dir);
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
    expect(problems).toEqual([
      'secret "preauth-secret" (--secret-file) has the same value as secret "env" (PREAUTH_GATE_SECRET)',
    ]);
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
    expect(problems).toContain('config file [[secrets]] #1: unknown key "expiry"; expected label, file or expires');
    expect(problems).toContain('config file [[secrets]] #1: the label is invalid; use letters, digits, ".", "_" and "-"');
    expect(problems).toContain(
      'secret "ambiguous" (config file [[secrets]] #2): expires is not a date-time such as 2027-01-31T00:00:00Z',
    );
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
    expect(problems[0]).toStartWith(`config file ${file}: invalid TOML`);
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

function runGate(args: string[], env: Record<string, string> = {}) {
  // The timeout stops a gate that starts serving where a test expects it to exit.
  const result = Bun.spawnSync([GATE_BINARY, ...args], { env: { PATH: process.env.PATH ?? "", ...env }, timeout: 10_000 });
  return { code: result.exitCode, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
}

describe("command line of the executable", () => {
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

describe("secret values given where a path belongs", () => {
  // Shaped like `preauth-gate secret` output: base64 with "/", "+" and "=" padding. The
  // second one splits as LABEL=PATH into a valid label and the path "=".
  const lookalikes = ["Qx7/Lm2+Rt9Vb4Nc6Hy8Pa1Sd3Fg5Jk0Wz2Ue4Io6Keo=", "Rv5Tn8Wq2Yb6Mc3Kd9Hf1Lg4Zx7Pa0Se=="];

  function expectNoPieceOf(secret: string, output: string): void {
    for (let start = 0; start + 8 <= secret.length; start++) {
      expect(output).not.toContain(secret.slice(start, start + 8));
    }
  }

  function configWithSecretFiles(secret: string): string {
    const file = join(mkdtempSync(join(tmpdir(), "preauth-file-")), "gate.toml");
    writeFileSync(file, `secret_files = ["${secret}"]\n`);
    return file;
  }

  for (const [index, secret] of lookalikes.entries()) {
    const cases: [string, string[], Record<string, string>, string][] = [
      ["--secret-file", ["check", "--secret-file", secret], {}, "--secret-file: cannot read the file: ENOENT"],
      ["PREAUTH_GATE_SECRET_FILE", ["check"], { PREAUTH_GATE_SECRET_FILE: secret }, "PREAUTH_GATE_SECRET_FILE: cannot read the file: ENOENT"],
      ["secret_files", ["check", "--config", configWithSecretFiles(secret)], {}, "config file key secret_files[0]: cannot read the file: ENOENT"],
      ["--config", ["check", "--config", secret], { PREAUTH_GATE_SECRET: TEST_SECRET }, "--config: cannot read the file: ENOENT"],
    ];
    for (const [name, args, env, message] of cases) {
      test(`${name} with lookalike ${index + 1} is not echoed`, () => {
        const result = runGate(args, env);
        expect(result.code).toBe(2);
        expect(result.stderr).toContain(message);
        expectNoPieceOf(secret, result.stdout + result.stderr);
      });
    }
  }
});

describe("other values that could hold a secret", () => {
  const pasted = "Qx7Lm2Rt9Vb4Nc6Hy8Pa1Sd3Fg5Jk0Wz2Ue4Io6K";

  test("upstream password is not echoed", () => {
    const problems = problemsOf({ flags: { upstream: [`http://mattermost:${pasted}@127.0.0.1:8065`] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(problems).toContain("--upstream: user information (user:password@) is not allowed");
    expect(problems.join("\n")).not.toContain(pasted);
  });

  test("expires value is not echoed", () => {
    const file = join(mkdtempSync(join(tmpdir(), "preauth-file-")), "gate.toml");
    writeFileSync(file, ["[[secrets]]", 'label = "q1"', `file = "${secretFile}"`, `expires = "${pasted}"`].join("\n"));
    const problems = problemsOf({ flags: { config: [file] }, env: {} });
    expect(problems.join("\n")).toContain("expires is not a date-time");
    expect(problems.join("\n")).not.toContain(pasted);
  });
});

describe("secret sources", () => {
  function writeSecretIn(dir: string, name: string, value: string): string {
    const path = join(dir, name);
    writeFileSync(path, `${value}\n`);
    return path;
  }

  test("secret files from every source add up", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-sources-"));
    const credentials = mkdtempSync(join(tmpdir(), "preauth-credentials-"));
    writeSecretIn(credentials, "preauth-secret-cred", "credential-secret-value-0001");
    const file = join(dir, "gate.toml");
    writeFileSync(
      file,
      [
        `secret_files = ["${writeSecretIn(dir, "listed", "listed-secret-value-00000001")}"]`,
        "[[secrets]]",
        'label = "table"',
        `file = "${writeSecretIn(dir, "table-file", "table-secret-value-000000001")}"`,
      ].join("\n"),
    );
    const config = loadConfig({
      flags: { config: [file], "secret-file": [writeSecretIn(dir, "flag", "flag-secret-value-0000000001")] },
      env: {
        PREAUTH_GATE_SECRET_FILE: `from-env=${writeSecretIn(dir, "env-file", "env-file-secret-value-000001")}`,
        PREAUTH_GATE_SECRET: "env-secret-value-00000000001",
        CREDENTIALS_DIRECTORY: credentials,
      },
    });
    expect(config.secrets.map((secret) => secret.label)).toEqual([
      "flag",
      "from-env",
      "listed",
      "table",
      "env",
      "preauth-secret-cred",
    ]);
    expect(config.secrets[2]!.value).toBe("listed-secret-value-00000001");
  });

  test("same file from flag and config file is a duplicate", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-sources-"));
    const secretPath = writeSecretIn(dir, "current", "current-secret-value-00000001");
    const file = join(dir, "gate.toml");
    writeFileSync(file, `secret_files = ["${secretPath}"]\n`);
    const problems = problemsOf({ flags: { config: [file], "secret-file": [secretPath] }, env: {} });
    expect(problems).toContain('secret label "current" is used more than once: --secret-file and config file key secret_files[0]');
    expect(problems).toContain('secret "current" (--secret-file) has the same value as secret "current" (config file key secret_files[0])');
    expect(problems).toHaveLength(2);
  });

  test("relative secret paths follow the config file", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-relative-"));
    mkdirSync(join(dir, "keys"));
    writeSecretIn(dir, "listed", "listed-secret-value-00000001");
    writeSecretIn(join(dir, "keys"), "tabled", "table-secret-value-000000001");
    const file = join(dir, "gate.toml");
    writeFileSync(file, ['secret_files = ["rotated=listed"]', "[[secrets]]", 'file = "keys/tabled"'].join("\n"));
    const config = loadConfig({ flags: { config: [file] }, env: {} });
    expect(config.secrets.map((secret) => secret.label)).toEqual(["rotated", "tabled"]);
    expect(config.secrets.map((secret) => secret.value)).toEqual([
      "listed-secret-value-00000001",
      "table-secret-value-000000001",
    ]);
  });
});

describe("stricter validation", () => {
  function writeConfigFile(lines: string[]): string {
    const file = join(mkdtempSync(join(tmpdir(), "preauth-file-")), "gate.toml");
    writeFileSync(file, `${lines.join("\n")}\n`);
    return file;
  }

  test("invalid TOML gives no wrong position", () => {
    const file = writeConfigFile(['listen = "127.0.0.1:8066"', "upstream = http://mattermost.internal:8065"]);
    const problems = problemsOf({ flags: { config: [file] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toStartWith(`config file ${file}: invalid TOML`);
    // The error is on line 2; a message that names any other line is wrong.
    expect(problems[0]).not.toMatch(/line (?!2\b)\d+/);
    expect(problems[0]).not.toMatch(/column \d+/);
    expect(problems[0]).not.toContain("mattermost.internal");
  });

  test("array for a single-value key", () => {
    const file = writeConfigFile(['upstream = ["http://a.test", "http://b.test"]', 'log_level = ["debug"]']);
    const problems = problemsOf({ flags: { config: [file] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(problems).toContain("config file key upstream: expected a single value, not an array");
    expect(problems).toContain("config file key log_level: expected a single value, not an array");
    expect(problems).toHaveLength(2);
  });

  test("list key with a non-string element", () => {
    const file = writeConfigFile(['allow = ["saml", 5]']);
    const problems = problemsOf({ flags: { config: [file] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(problems).toEqual(["config file key allow[1]: expected a string"]);
  });

  const badSeconds: [string, string][] = [
    ["shutdown-grace", "0x10"],
    ["idle-timeout", "1e2"],
    ["client-timeout", "30.0"],
    ["upstream-timeout", " 60"],
    ["upstream-timeout", "+60"],
  ];
  for (const [flag, value] of badSeconds) {
    test(`--${flag} "${value}" is rejected`, () => {
      const problems = problemsOf({ flags: { [flag]: [value] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
      expect(problems).toHaveLength(1);
      expect(problems[0]).toStartWith(`--${flag} "${value}": expected a whole number of seconds`);
    });
  }

  test("fractional seconds in the config file", () => {
    const file = writeConfigFile(["idle_timeout = 12.7"]);
    const problems = problemsOf({ flags: { config: [file] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(problems).toEqual(['config file key idle_timeout "12.7": expected a whole number of seconds from 10 to 255, in decimal digits']);
  });

  test("whole seconds from every source", () => {
    const file = writeConfigFile(["idle_timeout = 30", 'client_timeout = "45"']);
    const config = loadConfig({
      flags: { config: [file], "shutdown-grace": ["0"] },
      env: { PREAUTH_GATE_SECRET: TEST_SECRET, PREAUTH_GATE_UPSTREAM_TIMEOUT: "900" },
    });
    expect(config.idleTimeoutSeconds).toBe(30);
    expect(config.clientTimeoutMs).toBe(45_000);
    expect(config.shutdownGraceMs).toBe(0);
    expect(config.upstreamTimeoutMs).toBe(900_000);
  });

  const clashingAddresses: [string, string][] = [
    ["127.0.0.1:8066", "127.0.0.1:8066"],
    ["0.0.0.0:8066", "127.0.0.1:8066"],
    ["127.0.0.1:8066", "0.0.0.0:8066"],
    ["[::1]:8066", "[::]:8066"],
  ];
  for (const [listen, admin] of clashingAddresses) {
    test(`admin listener ${admin} clashes with ${listen}`, () => {
      const problems = problemsOf({
        flags: { listen: [listen], "admin-listen": [admin] },
        env: { PREAUTH_GATE_SECRET: TEST_SECRET },
      });
      expect(problems).toEqual([`--admin-listen "${admin}": the gate listens on ${listen} already; give the admin listener another port`]);
    });
  }

  test("admin listener on another port or family", () => {
    for (const [listen, admin] of [["127.0.0.1:8066", "127.0.0.1:9466"], ["0.0.0.0:8066", "[::1]:8066"], ["127.0.0.1:0", "127.0.0.1:0"]]) {
      const config = loadConfig({ flags: { listen: [listen!], "admin-listen": [admin!] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
      expect(config.adminListen).not.toBeNull();
    }
  });
});

describe("TLS key and certificate", () => {
  const dir = mkdtempSync(join(tmpdir(), "preauth-tls-"));

  const first = makeCertificate(dir, "first");
  const second = makeCertificate(dir, "second");
  const keyBody = readFileSync(first.key, "utf8").split("\n")[1]!;

  function tlsProblems(cert: string, key: string): string[] {
    return problemsOf({ flags: { "tls-cert": [cert], "tls-key": [key] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
  }

  test("matching pair is accepted", () => {
    expect(tlsProblems(first.cert, first.key)).toEqual([]);
  });

  test("key of another certificate", () => {
    const problems = tlsProblems(first.cert, second.key);
    expect(problems).toEqual(["--tls-key: the private key does not match the certificate in --tls-cert"]);
  });

  test("swapped certificate and key", () => {
    const problems = tlsProblems(first.key, first.cert);
    expect(problems).toContain(`--tls-cert ${first.key}: contains no certificate (-----BEGIN CERTIFICATE-----); are --tls-cert and --tls-key swapped?`);
    expect(problems).toContain(`--tls-key ${first.cert}: contains no private key (-----BEGIN ... PRIVATE KEY-----); are --tls-cert and --tls-key swapped?`);
    expect(problems.join("\n")).not.toContain(keyBody);
  });

  test("relative TLS paths follow the config file", () => {
    const file = join(dir, "gate.toml");
    writeFileSync(file, 'tls_cert = "first.crt"\ntls_key = "first.key"\n');
    const config = loadConfig({ flags: { config: [file] }, env: { PREAUTH_GATE_SECRET: TEST_SECRET } });
    expect(config.tls?.certFile).toBe(first.cert);
  });

  test("check exits 2 on a mismatched key", () => {
    const result = runGate(["check", "--tls-cert", first.cert, "--tls-key", second.key], { PREAUTH_GATE_SECRET: TEST_SECRET });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("does not match the certificate");
    expect(result.stdout + result.stderr).not.toContain(keyBody);
  });
});

describe("commands of the executable", () => {
  const usageErrors: string[][] = [
    ["check", "extra-arg"],
    ["explain", "/a", "/b"],
    ["secret", "64"],
    ["version", "now"],
    ["serve", "extra-arg", "--listen", "127.0.0.1:0"],
    ["help", "check"],
  ];
  for (const args of usageErrors) {
    test(`extra words: ${args.join(" ")}`, () => {
      const result = runGate([...args, "--secret-file", secretFile]);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/takes (no arguments besides options|one request target), but \d+ (was|were) given/);
    });
  }

  test("explain needs a target", () => {
    const result = runGate(["explain", "--secret-file", secretFile]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("explain needs a request target");
  });

  test("help after a command still prints help", () => {
    const result = runGate(["check", "--help"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("Usage:");
  });

  test("help gives ranges and the version command", () => {
    const result = runGate(["--help"]);
    expect(result.code).toBe(0);
    for (const text of ["1 to 86400", "1 to 3600", "0 to 3600", "10 to 255", "preauth-gate version", "[[secrets]]"]) {
      expect(result.stdout).toContain(text);
    }
  });

  test("explain a WebSocket upgrade with --allow websocket", () => {
    const result = runGate(["explain", "/api/v4/websocket", "--allow", "websocket", "--secret-file", secretFile]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("outcome: rejected with 403");
    expect(result.stdout).toContain("websocket upgrade: forwarded without the secret (--allow websocket)");
  });

  test("explain a WebSocket upgrade without the exemption", () => {
    const result = runGate(["explain", "/api/v4/websocket/", "--secret-file", secretFile]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("websocket upgrade: needs the secret, so it is rejected with 403 (secret missing)");
  });

  test("explain a WebSocket upgrade with the secret", () => {
    const result = runGate(["explain", "/api/v4/websocket?connection_id=x", "--with-secret", "--secret-file", secretFile]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('websocket upgrade: forwarded, secret "preauth-secret" accepted');
  });

  test("explain another path has no upgrade line", () => {
    const result = runGate(["explain", "/api/v4/users/me", "--allow", "websocket", "--secret-file", secretFile]);
    expect(result.code).toBe(0);
    expect(result.stdout).not.toContain("websocket upgrade");
  });

  test("check warns about an expired secret", () => {
    const dir = mkdtempSync(join(tmpdir(), "preauth-file-"));
    const file = join(dir, "gate.toml");
    const oldSecret = "old-secret-value-Zx8Qw2Er4Ty6Ui8Op0As";
    writeFileSync(
      file,
      [
        "[[secrets]]",
        'label = "current"',
        `file = "${secretFile}"`,
        "[[secrets]]",
        'label = "old"',
        `file = "${writeSecretFile(oldSecret, "old")}"`,
        "expires = 2020-01-01T00:00:00Z",
      ].join("\n"),
    );
    const result = runGate(["check", "--config", file]);
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('warning: secret "old" expired at 2020-01-01T00:00:00.000Z');
    expect(result.stderr).not.toContain('secret "current"');
    expect(result.stdout + result.stderr).not.toContain(oldSecret);
    expect(result.stdout + result.stderr).not.toContain(TEST_SECRET);
  });
});

// Configuration: collects raw settings from flags, environment and TOML file, validates
// all of them, and returns one frozen runtime object. Every problem is reported at once;
// no message ever contains a secret value.
import { readdirSync, readFileSync } from "node:fs";
import { BlockList, isIP } from "node:net";
import { basename, join } from "node:path";
import { OPTIONS, type OptionSpec } from "./options.ts";
import { secretProblem, type SecretEntry } from "./secrets.ts";
import { SERVICE_NAME, SSO_GROUPS, type SsoGroup } from "./whitelist.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";

/** The validated configuration the gate runs on. */
export interface Config {
  readonly listen: { readonly hostname: string; readonly port: number };
  /** Upstream origin without a trailing slash, for example "http://127.0.0.1:8065". */
  readonly upstreamOrigin: string;
  readonly secrets: readonly SecretEntry[];
  readonly groups: readonly SsoGroup[];
  readonly ssoServices: readonly string[];
  /** Exempt WebSocket upgrades to /api/v4/websocket from the secret. */
  readonly websocketExempt: boolean;
  readonly trustedProxies: readonly string[];
  readonly maxBodyBytes: number;
  readonly upstreamTimeoutMs: number;
  readonly clientTimeoutMs: number;
  readonly idleTimeoutSeconds: number;
  readonly shutdownGraceMs: number;
  /** Admin listener for health checks and metrics; null when off. */
  readonly adminListen: { readonly hostname: string; readonly port: number } | null;
  /** Certificate and key, read when the configuration is loaded; null serves plain HTTP. */
  readonly tls: { readonly cert: string; readonly key: string; readonly certFile: string } | null;
  readonly logLevel: LogLevel;
}

/** Thrown with every problem found, so that start-up can list them all. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((problem) => `  - ${problem}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

/** The raw inputs to the configuration; tests pass their own. */
export interface ConfigSources {
  /** Flag values by flag name, as parsed from the command line. */
  readonly flags: Readonly<Record<string, readonly string[]>>;
  readonly env: Readonly<Record<string, string | undefined>>;
}

interface RawValue {
  readonly values: readonly unknown[];
  /** The flag, variable or file key that gave the value, named in error messages. */
  readonly source: string;
}

const ALLOW_GROUPS = [...SSO_GROUPS, "websocket"] as const;
const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
const SECRET_TABLE_KEYS = new Set(["label", "file", "expires"]);
const LABEL = /^[A-Za-z0-9._-]+$/;
const FILE_KEYS = new Set([...OPTIONS.flatMap((o) => (o.fileKey ? [o.fileKey] : [])), "secrets"]);

function splitList(text: string): string[] {
  return text
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

function rawValue(spec: OptionSpec, sources: ConfigSources, file: Record<string, unknown>): RawValue {
  const flagValues = sources.flags[spec.flag];
  if (flagValues !== undefined && flagValues.length > 0) {
    const values = spec.repeatable ? flagValues.flatMap(splitListFor(spec)) : flagValues.slice(-1);
    return { values, source: `--${spec.flag}` };
  }
  const envValue = spec.env === null ? undefined : sources.env[spec.env];
  if (envValue !== undefined && envValue !== "") {
    const values = spec.repeatable ? splitList(envValue) : [envValue];
    return { values, source: spec.env! };
  }
  if (spec.fileKey !== null && spec.fileKey in file) {
    const value = file[spec.fileKey];
    const values = Array.isArray(value) ? value : [value];
    return { values, source: `config key ${spec.fileKey}` };
  }
  return { values: spec.defaultValue === null ? [] : [spec.defaultValue], source: `--${spec.flag}` };
}

// "--secret-file" paths may contain commas, so only list-like flags are split.
function splitListFor(spec: OptionSpec): (value: string) => string[] {
  return spec.flag === "secret-file" ? (value) => [value] : splitList;
}

function loadConfigFile(path: string, problems: string[]): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    problems.push(`config file ${path}: cannot read it: ${(error as NodeJS.ErrnoException).code ?? error}`);
    return {};
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = Bun.TOML.parse(text) as Record<string, unknown>;
  } catch (error) {
    // The parser's message quotes the offending text, which could be a secret when the
    // path names a secret file by mistake, so only the position is reported.
    const { line, column } = error as { line?: number; column?: number };
    const position = line === undefined ? "" : ` at line ${line}, column ${column}`;
    problems.push(`config file ${path}: invalid TOML${position}`);
    return {};
  }
  for (const key of Object.keys(parsed)) {
    if (!FILE_KEYS.has(key)) problems.push(`config file ${path}: unknown key "${key}"`);
  }
  return parsed;
}

function parseListen(raw: RawValue, problems: string[]): Config["listen"] {
  const text = String(raw.values[0] ?? "");
  return parseHostPort(text, raw.source, problems);
}

function parseHostPort(text: string, source: string, problems: string[]): Config["listen"] {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(text);
  const hostname = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (match === null || hostname === undefined || port > 65535) {
    problems.push(`${source} "${text}": expected HOST:PORT, for example 127.0.0.1:8066`);
    return { hostname: "127.0.0.1", port: 0 };
  }
  return { hostname, port };
}

function parseAdminListen(raw: RawValue, problems: string[]): Config["adminListen"] {
  if (raw.values.length === 0) return null;
  return parseHostPort(String(raw.values[0]), raw.source, problems);
}

function readPem(path: string, what: string, problems: string[]): string {
  try {
    const text = readFileSync(path, "utf8");
    if (!text.includes("-----BEGIN ")) problems.push(`${what} ${path}: not a PEM file`);
    return text;
  } catch (error) {
    problems.push(`${what} ${path}: cannot read it: ${(error as NodeJS.ErrnoException).code ?? error}`);
    return "";
  }
}

function parseTls(cert: RawValue, key: RawValue, problems: string[]): Config["tls"] {
  const certFile = cert.values[0];
  const keyFile = key.values[0];
  if (certFile === undefined && keyFile === undefined) return null;
  if (certFile === undefined || keyFile === undefined) {
    problems.push("--tls-cert and --tls-key go together: give both or neither");
    return null;
  }
  return {
    cert: readPem(String(certFile), `${cert.source}`, problems),
    key: readPem(String(keyFile), `${key.source}`, problems),
    certFile: String(certFile),
  };
}

function parseUpstream(raw: RawValue, problems: string[]): string {
  const text = String(raw.values[0] ?? "");
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    problems.push(`${raw.source} "${text}": not a URL; expected an origin such as http://127.0.0.1:8065`);
    return "http://invalid";
  }
  const shapeProblems: string[] = [];
  if (url.protocol !== "http:" && url.protocol !== "https:") shapeProblems.push("the scheme must be http or https");
  if (url.username !== "" || url.password !== "") shapeProblems.push("user information is not allowed");
  if (url.pathname !== "/" || url.search !== "" || url.hash !== "") {
    shapeProblems.push("a path, query or fragment is not allowed, because request paths are forwarded unchanged");
  }
  for (const problem of shapeProblems) problems.push(`${raw.source} "${text}": ${problem}`);
  return url.origin;
}

/** Parses "[LABEL=]PATH"; a label is letters, digits, ".", "_" and "-". */
function parseSecretFileSpec(text: string): { label: string; path: string } {
  const match = /^([A-Za-z0-9._-]+)=(.+)$/.exec(text);
  if (match !== null && !match[1]!.includes("/")) return { label: match[1]!, path: match[2]! };
  return { label: basename(text), path: text };
}

function readSecretFile(path: string, label: string, problems: string[]): string | null {
  try {
    // One trailing line break is what editors and `openssl rand -base64 32 > FILE` leave.
    return readFileSync(path, "latin1").replace(/\r?\n$/, "");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "error";
    problems.push(`secret "${label}": cannot read ${path}: ${code}`);
    return null;
  }
}

/** An RFC 3339 date-time with a time zone, as TOML writes it: 2027-01-31T00:00:00Z. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})$/i;

function parseExpiry(value: unknown, label: string, problems: string[]): Date | null {
  if (value === undefined || value === null) return null;
  // Bun's TOML parser returns a date-time value as an object whose string form is RFC 3339.
  const text = String(value);
  const time = RFC3339.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(time)) {
    problems.push(`secret "${label}": expires "${String(value)}" is not a date-time such as 2027-01-31T00:00:00Z`);
    return null;
  }
  return new Date(time);
}

interface SecretSource {
  label: string;
  value: string | null;
  origin: string;
  expires: unknown;
}

function collectSecrets(sources: ConfigSources, file: Record<string, unknown>, problems: string[]): SecretEntry[] {
  const found: SecretSource[] = [];
  const secretFiles = rawValue(
    OPTIONS.find((o) => o.flag === "secret-file")!,
    sources,
    file,
  );
  for (const spec of secretFiles.values) {
    const { label, path } = parseSecretFileSpec(String(spec));
    found.push({ label, value: readSecretFile(path, label, problems), origin: path, expires: undefined });
  }
  const tables = file.secrets;
  if (tables !== undefined) {
    if (!Array.isArray(tables)) problems.push('config key secrets: expected an array of tables [[secrets]]');
    for (const [index, table] of (Array.isArray(tables) ? tables : []).entries()) {
      const entry = table as Record<string, unknown>;
      for (const key of Object.keys(entry)) {
        if (!SECRET_TABLE_KEYS.has(key)) problems.push(`config secrets[${index}]: unknown key "${key}"; expected label, file or expires`);
      }
      if (typeof entry.file !== "string") {
        problems.push(`config secrets[${index}]: "file" (the path of the secret file) is missing`);
        continue;
      }
      const label = typeof entry.label === "string" ? entry.label : basename(entry.file);
      found.push({ label, value: readSecretFile(entry.file, label, problems), origin: entry.file, expires: entry.expires });
    }
  }
  const envSecret = sources.env.PREAUTH_GATE_SECRET;
  if (envSecret !== undefined) found.push({ label: "env", value: envSecret, origin: "PREAUTH_GATE_SECRET", expires: undefined });

  const credentials = sources.env.CREDENTIALS_DIRECTORY;
  if (credentials !== undefined && credentials !== "") {
    let names: string[] = [];
    try {
      names = readdirSync(credentials).filter((name) => name.startsWith("preauth-secret")).sort();
    } catch (error) {
      problems.push(`CREDENTIALS_DIRECTORY ${credentials}: cannot list it: ${(error as NodeJS.ErrnoException).code}`);
    }
    for (const name of names) {
      const path = join(credentials, name);
      found.push({ label: name, value: readSecretFile(path, name, problems), origin: path, expires: undefined });
    }
  }

  if (found.length === 0) {
    problems.push(
      "no secret configured: give --secret-file PATH, set PREAUTH_GATE_SECRET, or pass a systemd credential named preauth-secret",
    );
  }
  const entries: SecretEntry[] = [];
  const labels = new Set<string>();
  const values = new Map<string, string>();
  for (const secret of found) {
    if (!LABEL.test(secret.label)) {
      problems.push(`secret label "${secret.label}" is invalid; use letters, digits, ".", "_" and "-"`);
    }
    if (labels.has(secret.label)) problems.push(`secret label "${secret.label}" is used more than once`);
    labels.add(secret.label);
    if (secret.value === null) continue;
    const problem = secretProblem(secret.value);
    if (problem !== null) {
      problems.push(`secret "${secret.label}" (from ${secret.origin}) ${problem}`);
      continue;
    }
    const twin = values.get(secret.value);
    if (twin !== undefined) problems.push(`secrets "${twin}" and "${secret.label}" have the same value`);
    values.set(secret.value, secret.label);
    entries.push(Object.freeze({ label: secret.label, value: secret.value, expiresAt: parseExpiry(secret.expires, secret.label, problems) }));
  }
  if (entries.length > 0 && entries.every((entry) => entry.expiresAt !== null && entry.expiresAt.getTime() <= Date.now())) {
    problems.push("every configured secret has expired, so no client could get in; add a current secret");
  }
  return entries;
}

const SIZE_UNITS: Record<string, number> = {
  "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3,
};

function parseSize(raw: RawValue, problems: string[]): number {
  const text = String(raw.values[0] ?? "");
  const match = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(text.trim());
  const unit = SIZE_UNITS[(match?.[2] ?? "").toLowerCase()];
  if (match === null || unit === undefined || Number(match[1]) * unit < 1) {
    problems.push(`${raw.source} "${text}": expected a size such as 104857600, 100MB or 1GiB`);
    return 0;
  }
  return Math.floor(Number(match[1]) * unit);
}

function parseSeconds(raw: RawValue, min: number, max: number, problems: string[]): number {
  const text = String(raw.values[0] ?? "");
  const seconds = Number(text);
  if (text.trim() === "" || !Number.isFinite(seconds) || seconds < min || seconds > max) {
    problems.push(`${raw.source} "${text}": expected a number of seconds from ${min} to ${max}`);
    return min;
  }
  return seconds;
}

function parseGroups(raw: RawValue, problems: string[]): { groups: SsoGroup[]; websocketExempt: boolean } {
  const groups: SsoGroup[] = [];
  let websocketExempt = false;
  for (const value of raw.values) {
    const name = String(value).toLowerCase();
    if (name === "websocket") websocketExempt = true;
    else if ((SSO_GROUPS as readonly string[]).includes(name)) {
      if (!groups.includes(name as SsoGroup)) groups.push(name as SsoGroup);
    } else problems.push(`${raw.source} "${String(value)}": unknown group; expected one of ${ALLOW_GROUPS.join(", ")}`);
  }
  return { groups, websocketExempt };
}

function parseServices(raw: RawValue, problems: string[]): string[] {
  const services = raw.values.map(String);
  for (const service of services) {
    if (!SERVICE_NAME.test(service)) problems.push(`${raw.source} "${service}": a service name is letters and digits only`);
  }
  return [...new Set(services)];
}

function parseTrustedProxies(raw: RawValue, problems: string[]): string[] {
  const ranges = raw.values.map(String);
  for (const range of ranges) {
    const [address = "", prefix] = range.split("/");
    const family = isIP(address);
    const maxPrefix = family === 6 ? 128 : 32;
    const prefixOk = prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= maxPrefix);
    if (family === 0 || !prefixOk) {
      problems.push(`${raw.source} "${range}": expected an IP address or CIDR range such as 10.0.0.0/8`);
    }
  }
  return ranges;
}

/** Reads and validates the configuration; throws ConfigError listing every problem. */
export function loadConfig(sources: ConfigSources): Config {
  const problems: string[] = [];
  const configPath = sources.flags.config?.at(-1) ?? sources.env.PREAUTH_GATE_CONFIG;
  const file = configPath ? loadConfigFile(configPath, problems) : {};
  const raw = (flag: string) => rawValue(OPTIONS.find((o) => o.flag === flag)!, sources, file);

  const logLevelRaw = raw("log-level");
  const logLevel = String(logLevelRaw.values[0]) as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    problems.push(`${logLevelRaw.source} "${logLevel}": expected one of ${LOG_LEVELS.join(", ")}`);
  }
  const { groups, websocketExempt } = parseGroups(raw("allow"), problems);
  const config: Config = {
    listen: parseListen(raw("listen"), problems),
    upstreamOrigin: parseUpstream(raw("upstream"), problems),
    secrets: collectSecrets(sources, file, problems),
    groups,
    ssoServices: parseServices(raw("sso-services"), problems),
    websocketExempt,
    trustedProxies: parseTrustedProxies(raw("trusted-proxy"), problems),
    maxBodyBytes: parseSize(raw("max-body-size"), problems),
    upstreamTimeoutMs: parseSeconds(raw("upstream-timeout"), 1, 86400, problems) * 1000,
    clientTimeoutMs: parseSeconds(raw("client-timeout"), 1, 3600, problems) * 1000,
    idleTimeoutSeconds: parseSeconds(raw("idle-timeout"), 10, 255, problems),
    shutdownGraceMs: parseSeconds(raw("shutdown-grace"), 0, 3600, problems) * 1000,
    adminListen: parseAdminListen(raw("admin-listen"), problems),
    tls: parseTls(raw("tls-cert"), raw("tls-key"), problems),
    logLevel,
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/** Builds a matcher for the trusted proxy ranges; IPv4-mapped IPv6 addresses count as IPv4. */
export function trustedProxyMatcher(ranges: readonly string[]): (address: string) => boolean {
  if (ranges.length === 0) return () => false;
  const list = new BlockList();
  for (const range of ranges) {
    const [address = "", prefix] = range.split("/");
    const family = isIP(address) === 6 ? "ipv6" : "ipv4";
    const fullLength = family === "ipv6" ? 128 : 32;
    list.addSubnet(address, prefix === undefined ? fullLength : Number(prefix), family);
  }
  return (address) => {
    const mapped = address.startsWith("::ffff:") && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
    return list.check(mapped, isIP(mapped) === 6 ? "ipv6" : "ipv4");
  };
}

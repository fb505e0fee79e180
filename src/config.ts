// Configuration: collects raw settings from flags, environment and TOML file, validates
// all of them, and returns one frozen runtime object. Every problem is reported at once;
// no message ever contains a secret value.
import { readdirSync, readFileSync } from "node:fs";
import { BlockList, isIP } from "node:net";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
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
  /** Directory of the config file for relative paths when the value came from it, or null. */
  readonly baseDirectory: string | null;
}

/** The parsed config file, or an empty one when none is given. */
interface ConfigFile {
  readonly keys: Record<string, unknown>;
  /** Directory that relative paths in the file are resolved against, or null without a file. */
  readonly directory: string | null;
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

/** Returns "1st", "2nd", "3rd", "4th" and so on. */
function ordinal(position: number): string {
  const lastTwo = position % 100;
  const suffix = lastTwo >= 11 && lastTwo <= 13 ? "th" : (["th", "st", "nd", "rd"][position % 10] ?? "th");
  return `${position}${suffix}`;
}

/** Names the index-th of `count` values from one source, for example "--secret-file (2nd)". */
function nthSource(source: string, index: number, count: number): string {
  return count > 1 ? `${source} (${ordinal(index + 1)})` : source;
}

function rawValue(spec: OptionSpec, sources: ConfigSources, file: ConfigFile, problems: string[]): RawValue {
  const flagValues = sources.flags[spec.flag];
  if (flagValues !== undefined && flagValues.length > 0) {
    const values = spec.repeatable ? flagValues.flatMap(splitList) : flagValues.slice(-1);
    return { values, source: `--${spec.flag}`, baseDirectory: null };
  }
  const envValue = spec.env === null ? undefined : sources.env[spec.env];
  if (envValue !== undefined && envValue !== "") {
    const values = spec.repeatable ? splitList(envValue) : [envValue];
    return { values, source: spec.env!, baseDirectory: null };
  }
  if (spec.fileKey !== null && spec.fileKey in file.keys) {
    const values = fileValues(spec.fileKey, spec.repeatable, file.keys[spec.fileKey], problems);
    if (values !== null) return { values, source: `config file key ${spec.fileKey}`, baseDirectory: file.directory };
  }
  const values = spec.defaultValue === null ? [] : [spec.defaultValue];
  return { values, source: `--${spec.flag}`, baseDirectory: null };
}

/**
 * Checks the TOML type of a config file value: a list key takes an array of strings (or
 * one string), any other key one string or number. Returns null after noting a problem.
 */
function fileValues(key: string, isList: boolean, value: unknown, problems: string[]): unknown[] | null {
  const source = `config file key ${key}`;
  if (isList) {
    const items = Array.isArray(value) ? value : [value];
    const wrong = items.flatMap((item, index) => (typeof item === "string" ? [] : [index]));
    for (const index of wrong) {
      if (Array.isArray(value)) problems.push(`${source}[${index}]: expected a string`);
      else problems.push(`${source}: expected an array of strings`);
    }
    return wrong.length === 0 ? items : null;
  }
  if (Array.isArray(value)) {
    problems.push(`${source}: expected a single value, not an array`);
    return null;
  }
  if (typeof value !== "string" && typeof value !== "number") {
    problems.push(`${source}: expected a string or a number`);
    return null;
  }
  return [value];
}

/** Resolves a path from the config file against the file's directory. */
function resolvePath(path: string, baseDirectory: string | null): string {
  return baseDirectory === null || isAbsolute(path) ? path : resolve(baseDirectory, path);
}

/**
 * Reads and parses the TOML file named by --config or PREAUTH_GATE_CONFIG. Messages show
 * the path of a file that could be read. An unreadable path is not shown, because it may
 * be a secret given there by mistake.
 */
function loadConfigFile(sources: ConfigSources, problems: string[]): ConfigFile {
  const flagPath = sources.flags.config?.at(-1);
  const path = flagPath ?? sources.env.PREAUTH_GATE_CONFIG;
  if (path === undefined || path === "") return { keys: {}, directory: null };
  const source = flagPath === undefined ? "PREAUTH_GATE_CONFIG" : "--config";
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    problems.push(`${source}: cannot read the file: ${errorCode(error)}`);
    return { keys: {}, directory: null };
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = Bun.TOML.parse(text) as Record<string, unknown>;
  } catch {
    // The parser's message quotes the offending text, which could be a secret when the
    // path names a secret file by mistake, so it is left out. Bun 1.4.5's SyntaxError
    // has no position in the parsed text: its line and column are those of this call.
    problems.push(
      `config file ${path}: invalid TOML; the parser reports no line number, ` +
        "and its message is not shown because it can quote the file's text",
    );
    return { keys: {}, directory: null };
  }
  for (const key of Object.keys(parsed)) {
    if (!FILE_KEYS.has(key)) problems.push(`config file ${path}: unknown key "${key}"`);
  }
  return { keys: parsed, directory: dirname(resolve(path)) };
}

function errorCode(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? String(error);
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

function parseAdminListen(raw: RawValue, listen: Config["listen"], problems: string[]): Config["adminListen"] {
  if (raw.values.length === 0) return null;
  const text = String(raw.values[0]);
  const problemsBefore = problems.length;
  const admin = parseHostPort(text, raw.source, problems);
  if (problems.length === problemsBefore && addressesClash(admin, listen)) {
    const clash = `the gate listens on ${formatHostPort(listen)} already; give the admin listener another port`;
    problems.push(`${raw.source} "${text}": ${clash}`);
  }
  return admin;
}

function formatHostPort(address: Config["listen"]): string {
  return isIP(address.hostname) === 6 ? `[${address.hostname}]:${address.port}` : `${address.hostname}:${address.port}`;
}

/**
 * Tells whether two listeners on these addresses cannot both bind. They clash on the same
 * port (other than 0, which picks a free one) with the same host, or when one host is the
 * wildcard address of the other's family.
 * NOTE: "::" also takes IPv4 connections where net.ipv6.bindv6only is 0, the Linux default.
 * Such a clash with an IPv4 address is not caught here, so serve fails with EADDRINUSE.
 */
function addressesClash(first: Config["listen"], second: Config["listen"]): boolean {
  if (first.port === 0 || first.port !== second.port) return false;
  const [a, b] = [first.hostname.toLowerCase(), second.hostname.toLowerCase()];
  if (a === b) return true;
  const family = isIP(a);
  if (family === 0 || family !== isIP(b)) return false;
  const wildcard = family === 4 ? "0.0.0.0" : "::";
  return a === wildcard || b === wildcard;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----/;
const PEM_PRIVATE_KEY = /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/;

/** Reads a PEM file, or returns null after noting a problem. Messages never quote the file. */
function readPem(path: string, setting: string, expected: "certificate" | "key", problems: string[]): string | null {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    problems.push(`${setting} ${path}: cannot read it: ${errorCode(error)}`);
    return null;
  }
  const swapHint = "are --tls-cert and --tls-key swapped?";
  if (expected === "certificate" && !PEM_CERTIFICATE.test(text)) {
    problems.push(`${setting} ${path}: contains no certificate (-----BEGIN CERTIFICATE-----); ${swapHint}`);
    return null;
  }
  if (expected === "key" && !PEM_PRIVATE_KEY.test(text)) {
    problems.push(`${setting} ${path}: contains no private key (-----BEGIN ... PRIVATE KEY-----); ${swapHint}`);
    return null;
  }
  return text;
}

function parseTls(cert: RawValue, key: RawValue, problems: string[]): Config["tls"] {
  const certValue = cert.values[0];
  const keyValue = key.values[0];
  if (certValue === undefined && keyValue === undefined) return null;
  if (certValue === undefined || keyValue === undefined) {
    problems.push("--tls-cert and --tls-key go together: give both or neither");
    return null;
  }
  const certFile = resolvePath(String(certValue), cert.baseDirectory);
  const certText = readPem(certFile, cert.source, "certificate", problems);
  const keyText = readPem(resolvePath(String(keyValue), key.baseDirectory), key.source, "key", problems);
  if (certText === null || keyText === null) return { cert: "", key: "", certFile };
  const problem = tlsPairProblem(certText, keyText, cert.source);
  if (problem !== null) problems.push(`${key.source}: ${problem}`);
  return { cert: certText, key: keyText, certFile };
}

/**
 * Returns why the gate could not serve TLS with this certificate and key, or null. The
 * check builds a TLS context, as the listener does, so `check` catches a key of another
 * certificate before `serve` fails to bind. Only OpenSSL's error code is reported, never
 * the key.
 */
function tlsPairProblem(cert: string, key: string, certSource: string): string | null {
  // node:tls is loaded only when TLS is configured, as it adds several megabytes to
  // every process.
  const { createSecureContext } = require("node:tls") as typeof import("node:tls");
  try {
    createSecureContext({ cert, key });
    return null;
  } catch (error) {
    const code = (error as { code?: string }).code ?? "unknown error";
    if (/KEY_(?:TYPE|VALUES)_MISMATCH/.test(code)) {
      return `the private key does not match the certificate in ${certSource}`;
    }
    if (/BAD_DECRYPT|BAD_PASSWORD_READ/.test(code)) {
      return "the private key is encrypted with a passphrase; the gate needs an unencrypted key";
    }
    return `the certificate and private key cannot be used for TLS (${code})`;
  }
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
  // A password in the URL must not reach the error message, so such a URL is not quoted.
  const hasUserInfo = url.username !== "" || url.password !== "";
  const quoted = hasUserInfo ? "" : ` "${text}"`;
  if (url.protocol !== "http:" && url.protocol !== "https:") shapeProblems.push("the scheme must be http or https");
  if (hasUserInfo) shapeProblems.push("user information (user:password@) is not allowed");
  if (url.pathname !== "/" || url.search !== "" || url.hash !== "") {
    shapeProblems.push("a path, query or fragment is not allowed, because request paths are forwarded unchanged");
  }
  for (const problem of shapeProblems) problems.push(`${raw.source}${quoted}: ${problem}`);
  return url.origin;
}

/** Parses "[LABEL=]PATH"; a label is letters, digits, ".", "_" and "-". */
function parseSecretFileSpec(text: string): { label: string; labelGiven: boolean; path: string } {
  const match = /^([A-Za-z0-9._-]+)=(.+)$/.exec(text);
  if (match !== null) return { label: match[1]!, labelGiven: true, path: match[2]! };
  return { label: basename(text), labelGiven: false, path: text };
}

function readSecretFile(path: string, source: string, problems: string[]): string | null {
  try {
    // One trailing line break is what editors and `openssl rand -base64 32 > FILE` leave.
    return readFileSync(path, "latin1").replace(/\r?\n$/, "");
  } catch (error) {
    problems.push(`${source}: cannot read the file: ${errorCode(error)}`);
    return null;
  }
}

/** An RFC 3339 date-time with a time zone, as TOML writes it: 2027-01-31T00:00:00Z. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})$/i;

function parseExpiry(value: unknown, secretName: string, problems: string[]): Date | null {
  if (value === undefined || value === null) return null;
  // Bun's TOML parser returns a date-time value as an object whose string form is RFC 3339.
  const text = String(value);
  const time = RFC3339.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(time)) {
    // The value is not quoted: a secret pasted into the wrong field must not be printed.
    problems.push(`${secretName}: expires is not a date-time such as 2027-01-31T00:00:00Z`);
    return null;
  }
  return new Date(time);
}

interface FoundSecret {
  readonly label: string;
  /** Null when the file could not be read. */
  readonly value: string | null;
  /** Setting that configured the secret, such as "--secret-file (2nd)", and never a path or a value. */
  readonly source: string;
  readonly expires: unknown;
  /** The label was written out, not taken from the file name. */
  readonly labelGiven: boolean;
}

/**
 * Names a secret in a message: by label and source once its file was read and its label
 * is valid, otherwise by source alone. A secret given where a path belongs would otherwise
 * be printed, because the path and the label taken from it are that secret.
 */
function describeSecret(secret: FoundSecret): string {
  if (secret.value === null || !LABEL.test(secret.label)) return secret.source;
  return `secret "${secret.label}" (${secret.source})`;
}

/** Adds a secret file given as "[LABEL=]PATH", resolving a relative PATH against `baseDirectory`. */
function addSecretFile(
  spec: string,
  source: string,
  baseDirectory: string | null,
  found: FoundSecret[],
  problems: string[],
): void {
  const { label, labelGiven, path } = parseSecretFileSpec(spec);
  const value = readSecretFile(resolvePath(path, baseDirectory), source, problems);
  found.push({ label, value, source, expires: undefined, labelGiven });
}

/** Adds the config file's [[secrets]] tables, each with a file and an optional label and expiry. */
function addSecretTables(file: ConfigFile, found: FoundSecret[], problems: string[]): void {
  const tables = file.keys.secrets;
  if (tables === undefined) return;
  if (!Array.isArray(tables)) {
    problems.push("config file key secrets: expected an array of tables [[secrets]]");
    return;
  }
  for (const [index, table] of tables.entries()) {
    const source = `config file [[secrets]] #${index + 1}`;
    if (typeof table !== "object" || table === null || Array.isArray(table)) {
      problems.push(`${source}: expected a table with label, file and expires`);
      continue;
    }
    const entry = table as Record<string, unknown>;
    for (const key of Object.keys(entry)) {
      if (SECRET_TABLE_KEYS.has(key)) continue;
      problems.push(`${source}: unknown key "${key}"; expected label, file or expires`);
    }
    if (entry.label !== undefined && typeof entry.label !== "string") {
      problems.push(`${source}: "label" must be a string`);
    }
    if (typeof entry.file !== "string") {
      problems.push(`${source}: "file" (the path of the secret file) is missing`);
      continue;
    }
    const label = typeof entry.label === "string" ? entry.label : basename(entry.file);
    const value = readSecretFile(resolvePath(entry.file, file.directory), source, problems);
    found.push({ label, value, source, expires: entry.expires, labelGiven: typeof entry.label === "string" });
  }
}

/** Adds systemd credentials named preauth-secret* from $CREDENTIALS_DIRECTORY, labelled by name. */
function addCredentials(sources: ConfigSources, found: FoundSecret[], problems: string[]): void {
  const credentials = sources.env.CREDENTIALS_DIRECTORY;
  if (credentials === undefined || credentials === "") return;
  let names: string[] = [];
  try {
    names = readdirSync(credentials).filter((name) => name.startsWith("preauth-secret")).sort();
  } catch (error) {
    problems.push(`CREDENTIALS_DIRECTORY ${credentials}: cannot list it: ${errorCode(error)}`);
  }
  for (const name of names) {
    const source = `systemd credential ${name}`;
    const value = readSecretFile(join(credentials, name), source, problems);
    found.push({ label: name, value, source, expires: undefined, labelGiven: false });
  }
}

/**
 * Collects the secrets of every source, which add up: --secret-file flags,
 * PREAUTH_GATE_SECRET_FILE, the config file's secret_files and [[secrets]],
 * PREAUTH_GATE_SECRET and systemd credentials. Labels and values must be unique.
 */
function collectSecrets(sources: ConfigSources, file: ConfigFile, problems: string[]): SecretEntry[] {
  const found: FoundSecret[] = [];
  // "--secret-file" paths may contain commas, so the flag's values are not split.
  const flagSpecs = sources.flags["secret-file"] ?? [];
  for (const [index, spec] of flagSpecs.entries()) {
    addSecretFile(spec, nthSource("--secret-file", index, flagSpecs.length), null, found, problems);
  }
  const envSpecs = splitList(sources.env.PREAUTH_GATE_SECRET_FILE ?? "");
  for (const [index, spec] of envSpecs.entries()) {
    addSecretFile(spec, nthSource("PREAUTH_GATE_SECRET_FILE", index, envSpecs.length), null, found, problems);
  }
  if ("secret_files" in file.keys) {
    const listed = file.keys.secret_files;
    const fileSpecs = fileValues("secret_files", true, listed, problems) ?? [];
    for (const [index, spec] of fileSpecs.entries()) {
      const source = Array.isArray(listed) ? `config file key secret_files[${index}]` : "config file key secret_files";
      addSecretFile(String(spec), source, file.directory, found, problems);
    }
  }
  addSecretTables(file, found, problems);
  const envSecret = sources.env.PREAUTH_GATE_SECRET;
  if (envSecret !== undefined) {
    const source = "PREAUTH_GATE_SECRET";
    found.push({ label: "env", value: envSecret, source, expires: undefined, labelGiven: false });
  }
  addCredentials(sources, found, problems);

  if (found.length === 0) {
    problems.push(
      "no secret configured: give --secret-file PATH, set PREAUTH_GATE_SECRET, or pass a systemd credential named preauth-secret",
    );
  }
  return validateSecrets(found, problems);
}

function validateSecrets(found: readonly FoundSecret[], problems: string[]): SecretEntry[] {
  const entries: SecretEntry[] = [];
  const labels = new Map<string, FoundSecret>();
  const values = new Map<string, FoundSecret>();
  for (const secret of found) {
    // A label that fails validation may be a piece of a secret given as a path, so it is
    // not quoted. A secret whose file could not be read has a problem already: a label
    // taken from that file's name is not checked, and no label of it is compared with
    // the others, for the same reason.
    if (!LABEL.test(secret.label) && (secret.value !== null || secret.labelGiven)) {
      problems.push(`${secret.source}: the label is invalid; use letters, digits, ".", "_" and "-"`);
    }
    if (secret.value === null) continue;
    const sameLabel = labels.get(secret.label);
    if (sameLabel !== undefined && LABEL.test(secret.label)) {
      problems.push(`secret label "${secret.label}" is used more than once: ${sameLabel.source} and ${secret.source}`);
    }
    labels.set(secret.label, secret);
    const problem = secretProblem(secret.value);
    if (problem !== null) {
      problems.push(`${describeSecret(secret)} ${problem}`);
      continue;
    }
    const twin = values.get(secret.value);
    if (twin !== undefined) problems.push(`${describeSecret(twin)} has the same value as ${describeSecret(secret)}`);
    values.set(secret.value, secret);
    const expiresAt = parseExpiry(secret.expires, describeSecret(secret), problems);
    entries.push(Object.freeze({ label: secret.label, value: secret.value, expiresAt }));
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

/** Parses whole seconds: decimal digits in a flag, variable or string, or a TOML integer. */
function parseSeconds(raw: RawValue, min: number, max: number, problems: string[]): number {
  const value = raw.values[0];
  const text = String(value ?? "");
  const whole = typeof value === "number" ? Number.isSafeInteger(value) : /^\d+$/.test(text);
  const seconds = Number(text);
  if (!whole || seconds < min || seconds > max) {
    const expected = `expected a whole number of seconds from ${min} to ${max}, in decimal digits`;
    problems.push(`${raw.source} "${text}": ${expected}`);
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
  const file = loadConfigFile(sources, problems);
  const raw = (flag: string) => rawValue(OPTIONS.find((o) => o.flag === flag)!, sources, file, problems);

  const logLevelRaw = raw("log-level");
  const logLevel = String(logLevelRaw.values[0]) as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    problems.push(`${logLevelRaw.source} "${logLevel}": expected one of ${LOG_LEVELS.join(", ")}`);
  }
  const { groups, websocketExempt } = parseGroups(raw("allow"), problems);
  const listen = parseListen(raw("listen"), problems);
  const config: Config = {
    listen,
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
    adminListen: parseAdminListen(raw("admin-listen"), listen, problems),
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

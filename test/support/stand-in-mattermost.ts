// A stand-in for a Mattermost server, for tests, benchmarks and the demo. It routes like
// the real server's router (Go net/http plus gorilla/mux). It reads the raw request target,
// responds with 301 to the cleaned path for an unclean target, and matches routes case- and
// trailing-slash-sensitively. It logs every request it receives.
//
// It uses node:http rather than Bun.serve because Bun.serve normalizes the URL (it
// resolves dot segments and turns "\" into "/"), while node:http under Bun passes the
// request target through unchanged in `req.url`.
//
// Run directly: bun test/support/stand-in-mattermost.ts [--port 8065] [--host 127.0.0.1] [--quiet]

import { createHash, randomBytes } from "node:crypto";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { Readable, type Duplex } from "node:stream";
import { gzipSync } from "node:zlib";

import { checkRequestTarget } from "./mattermost-paths.ts";
import { checkUpgradeRequest, EchoWebSocket, switchingProtocolsResponse } from "./websocket-server.ts";

/** One request as the stand-in received it. */
export interface ReceivedRequest {
  method: string;
  /** Raw request target exactly as it arrived on the wire (path and query, undecoded). */
  target: string;
  /** Raw path part of the target, before the first "?". */
  path: string;
  /** Lower-case header names mapped to every value, in arrival order. */
  headers: Record<string, string[]>;
  /** Header names and values as received, alternating. */
  rawHeaders: string[];
  /** Request body bytes received so far. The count is final once the response has been sent. */
  bodyBytes: number;
  /**
   * Name of the route that matched, "redirect" for a 301 to the cleaned path, or null when
   * no route matched (404) or the target was invalid (400).
   */
  route: string | null;
  /** Status code sent, or 0 while no response has been started. */
  status: number;
}

export interface StandInMattermost {
  /** Base URL, such as http://127.0.0.1:8065. */
  url: string;
  port: number;
  /** Every request received, in arrival order. Empty when started with `record: false`. */
  received: ReceivedRequest[];
  /** Empties `received` in place. */
  clear(): void;
  /** Stops listening and destroys every open connection, WebSockets included. */
  close(): Promise<void>;
}

export interface StandInOptions {
  /** TCP port. The default, 0, picks a free port. */
  port?: number;
  /** Address to listen on; 127.0.0.1 by default. */
  host?: string;
  /** Suppresses the log line per request. */
  quiet?: boolean;
  /** Keeps `received` empty when false, so long benchmark runs do not grow memory. Default true. */
  record?: boolean;
}

/** Value of the `X-Version-Id` header on every response. */
export const VERSION_ID = "10.11.0.10.11.0.standin.false";

/** Id of the user that `/api/v4/users/me` and `/api/v4/users/login` return. */
export const USER_ID = "standinuser0000000000000001";

/** Default size of `GET /api/v4/files/{id}` without `?size=`: 50 MiB. */
export const DEFAULT_DOWNLOAD_BYTES = 50 * 1024 * 1024;

/** Size of `/static/bench-50k.js`: 50 KiB. */
export const BENCH_STATIC_BYTES = 50 * 1024;

/** Default wait of `GET /api/v4/slow` without `?ms=`. */
export const DEFAULT_SLOW_MS = 12_000;

/** Largest request body kept in memory for routes that read it (echo, posts, login). */
const KEPT_BODY_LIMIT = 16 * 1024 * 1024;

// Mattermost documents 300 s as the default ServiceSettings.IdleTimeout (Web Server settings).
const KEEP_ALIVE_TIMEOUT_MS = 300_000;

// ---------------------------------------------------------------------------------------
// Download content: byte i of every download is i % 251, so any range can be generated
// from its offset and checked by a test without holding the file.

const DOWNLOAD_PERIOD = 251;
const DOWNLOAD_CHUNK = 64 * 1024;
const DOWNLOAD_PATTERN = Buffer.alloc(Math.ceil((DOWNLOAD_CHUNK + DOWNLOAD_PERIOD) / DOWNLOAD_PERIOD) * DOWNLOAD_PERIOD);
for (let index = 0; index < DOWNLOAD_PATTERN.length; index++) DOWNLOAD_PATTERN[index] = index % DOWNLOAD_PERIOD;

/** Returns the bytes `[start, end)` of every download, for checking responses. */
export function expectedDownloadBytes(start: number, end: number): Buffer {
  const bytes = Buffer.alloc(end - start);
  for (let index = 0; index < bytes.length; index++) bytes[index] = (start + index) % DOWNLOAD_PERIOD;
  return bytes;
}

// ---------------------------------------------------------------------------------------
// Responses

type HeaderPairs = Array<[string, string]>;

/**
 * Where a route writes its response: a node:http response, or a raw socket when the
 * request came through the `upgrade` event but is not a WebSocket handshake.
 */
interface ResponseSink {
  writeHead(status: number, headers: HeaderPairs): void;
  /** Returns false when the caller should wait for `onDrain` before writing more. */
  write(chunk: Uint8Array): boolean;
  end(chunk?: Uint8Array): void;
  onDrain(listener: () => void): void;
  onClose(listener: () => void): void;
  readonly closed: boolean;
}

function serverResponseSink(res: ServerResponse): ResponseSink {
  return {
    writeHead(status, headers) {
      res.writeHead(status, headers.flat());
    },
    write: (chunk) => res.write(chunk),
    end: (chunk) => (chunk === undefined ? res.end() : res.end(chunk)),
    onDrain: (listener) => res.once("drain", listener),
    onClose: (listener) => res.once("close", listener),
    get closed() {
      return res.destroyed;
    },
  };
}

/** Writes HTTP/1.1 by hand to a socket taken over by the `upgrade` event, then closes it. */
function rawSocketSink(socket: Duplex): ResponseSink {
  return {
    writeHead(status, headers) {
      const lines = [`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? "Unknown"}`];
      for (const [name, value] of headers) lines.push(`${name}: ${value}`);
      lines.push(`Date: ${new Date().toUTCString()}`, "Connection: close");
      socket.write(`${lines.join("\r\n")}\r\n\r\n`);
    },
    write: (chunk) => socket.write(chunk),
    end: (chunk) => (chunk === undefined ? socket.end() : socket.end(chunk)),
    onDrain: (listener) => socket.once("drain", listener),
    onClose: (listener) => socket.once("close", listener),
    get closed() {
      return socket.destroyed;
    },
  };
}

function newId(): string {
  return randomBytes(13).toString("hex");
}

/** Per-request state shared by the routes. */
interface Exchange {
  method: string;
  /** Decoded path that matched the route. */
  path: string;
  query: URLSearchParams;
  headers: Record<string, string[]>;
  record: ReceivedRequest;
  sink: ResponseSink;
  /** Values captured by the route's pattern. */
  params: string[];
  /** Request body, read in full before the route runs, unless the route streams it. */
  body: Buffer;
  /** Request body stream, for routes that stream it. */
  bodyStream: Readable;
  /** Timers to cancel when the server closes. */
  timers: Set<ReturnType<typeof setTimeout>>;
}

function firstHeader(exchange: Exchange, name: string): string | undefined {
  return exchange.headers[name]?.[0];
}

/** Sends a complete response, adding the headers that every Mattermost response carries. */
function send(exchange: Exchange, status: number, headers: HeaderPairs, body: Buffer | string = ""): void {
  const bytes = typeof body === "string" ? Buffer.from(body) : body;
  const all: HeaderPairs = [...headers, ["X-Request-Id", newId()], ["X-Version-Id", VERSION_ID]];
  const bodyAllowed = status !== 204 && status !== 304;
  if (bodyAllowed && !all.some(([name]) => name.toLowerCase() === "content-length")) {
    all.push(["Content-Length", String(bytes.length)]);
  }
  exchange.sink.writeHead(status, all);
  if (exchange.method === "HEAD" || !bodyAllowed) exchange.sink.end();
  else exchange.sink.end(bytes);
}

function sendJson(exchange: Exchange, status: number, value: unknown, headers: HeaderPairs = []): void {
  send(exchange, status, [["Content-Type", "application/json"], ...headers], JSON.stringify(value));
}

function sendHtml(exchange: Exchange, title: string, text: string): void {
  const page = `<!DOCTYPE html>\n<html><head><title>${title}</title></head><body><p>${text}</p></body></html>\n`;
  send(exchange, 200, [["Content-Type", "text/html; charset=utf-8"]], page);
}

function sendNotFound(exchange: Exchange): void {
  sendJson(exchange, 404, {
    id: "api.context.404.app_error",
    message: "Sorry, we could not find the page.",
    detailed_error: `There doesn't appear to be an api call for the url='${exchange.path}'.`,
    request_id: newId(),
    status_code: 404,
  });
}

function sendBadRequest(exchange: Exchange, detail: string): void {
  sendJson(exchange, 400, {
    id: "api.context.invalid_param.app_error",
    message: "Invalid or missing parameter in request.",
    detailed_error: detail,
    status_code: 400,
  });
}

// ---------------------------------------------------------------------------------------
// Fixtures

const USER = {
  id: USER_ID,
  create_at: 1_700_000_000_000,
  update_at: 1_700_000_000_000,
  delete_at: 0,
  username: "stand-in",
  auth_service: "",
  email: "stand-in@example.com",
  nickname: "",
  first_name: "Stand",
  last_name: "In",
  position: "",
  roles: "system_user",
  locale: "en",
  timezone: { automaticTimezone: "", manualTimezone: "", useAutomaticTimezone: "true" },
};

const TEAM = {
  id: "standinteam000000000000001",
  display_name: "Stand-in Team",
  name: "stand-in",
  type: "O",
  allow_open_invite: false,
};

function buildClientConfig(): Record<string, string> {
  const config: Record<string, string> = {
    AboutLink: "https://mattermost.com/about",
    AllowCustomThemes: "true",
    AndroidAppDownloadLink: "https://mattermost.com/mattermost-android-app/",
    AppDownloadLink: "https://mattermost.com/download/#mattermostApps",
    BuildDate: "Mon Jan 01 00:00:00 UTC 2024",
    BuildEnterpriseReady: "false",
    BuildHash: "0000000000000000000000000000000000000000",
    BuildNumber: "10.11.0",
    DefaultClientLocale: "en",
    DiagnosticsEnabled: "false",
    EmailLoginButtonColor: "#0000",
    EnableBotAccountCreation: "false",
    EnableCustomEmoji: "true",
    EnableFileAttachments: "true",
    EnableMobileFileDownload: "true",
    EnableMobileFileUpload: "true",
    EnableOpenServer: "false",
    EnableSignInWithEmail: "true",
    EnableSignInWithUsername: "true",
    EnableSignUpWithEmail: "true",
    EnableSignUpWithGitLab: "false",
    EnableUserCreation: "true",
    ExperimentalEnableAutomaticReplies: "false",
    FeatureFlagAppsEnabled: "false",
    HelpLink: "https://mattermost.com/default-help/",
    IosAppDownloadLink: "https://mattermost.com/mattermost-ios-app/",
    MaxFileSize: "104857600",
    MaxPostSize: "16383",
    NoAccounts: "false",
    PasswordMinimumLength: "8",
    PrivacyPolicyLink: "https://mattermost.com/privacy-policy/",
    ReportAProblemLink: "https://mattermost.com/default-report-a-problem/",
    SiteName: "Mattermost",
    SiteURL: "",
    SupportEmail: "feedback@mattermost.com",
    TermsOfServiceLink: "https://mattermost.com/terms-of-use/",
    Version: "10.11.0",
    WebsocketPort: "80",
    WebsocketSecurePort: "443",
    WebsocketURL: "",
  };
  // Filler keys bring the body to about 2 KB.
  for (let index = 0; JSON.stringify(config).length < 2000; index++) {
    config[`ExperimentalStandInSetting${index}`] = "false";
  }
  return config;
}

const CLIENT_CONFIG = JSON.stringify(buildClientConfig());

// ---------------------------------------------------------------------------------------
// Static files: generated per path, compressed once, then cached.

interface StaticFile {
  contentType: string;
  body: Buffer;
  gzipped: Buffer;
  etag: string;
  gzipEtag: string;
}

const staticFiles = new Map<string, StaticFile>();
const STATIC_CACHE_ENTRIES = 1000;

/** Builds `size` bytes of JavaScript- or CSS-like text that depends on `name`. */
function generateStaticText(name: string, isCss: boolean, size: number): Buffer {
  const seed = createHash("sha256").update(name).digest("hex");
  const lines = [isCss ? `/* stand-in stylesheet ${name} */` : `// stand-in script ${name}`];
  let length = lines[0]!.length + 1;
  for (let index = 0; length < size - 80; index++) {
    const token = seed.slice(index % 56, (index % 56) + 8);
    const line = isCss
      ? `.standin-${index} { color: #${token.slice(0, 6)}; margin: ${index % 17}px; }`
      : `export const value${index} = "${token}"; // line ${index}`;
    lines.push(line);
    length += line.length + 1;
  }
  const text = `${lines.join("\n")}\n`;
  // A closing comment pads the text to exactly `size` bytes.
  const padding = size - Buffer.byteLength(text);
  if (padding < 5) return Buffer.from(text.padEnd(size, "\n"));
  return Buffer.from(`${text}/*${" ".repeat(padding - 5)}*/\n`);
}

function staticFile(name: string): StaticFile {
  const cached = staticFiles.get(name);
  if (cached !== undefined) return cached;

  const isCss = name.endsWith(".css");
  let contentType = "application/octet-stream";
  if (isCss) contentType = "text/css; charset=utf-8";
  else if (name.endsWith(".js")) contentType = "text/javascript; charset=utf-8";
  else if (name.endsWith(".json")) contentType = "application/json";

  const hash = createHash("sha256").update(name).digest();
  const size = name === "bench-50k.js" ? BENCH_STATIC_BYTES : 2048 + (hash.readUInt16BE(0) % 8192);
  const body = generateStaticText(name, isCss, size);
  const digest = createHash("sha1").update(body).digest("hex").slice(0, 20);
  const file = { contentType, body, gzipped: gzipSync(body), etag: `"${digest}"`, gzipEtag: `"${digest}-gzip"` };
  if (staticFiles.size >= STATIC_CACHE_ENTRIES) staticFiles.clear();
  staticFiles.set(name, file);
  return file;
}

/** Reports whether Accept-Encoding lists gzip with a non-zero quality. */
function acceptsGzip(exchange: Exchange): boolean {
  const values = exchange.headers["accept-encoding"] ?? [];
  for (const part of values.join(",").split(",")) {
    const [coding, ...parameters] = part.split(";").map((piece) => piece.trim().toLowerCase());
    if (coding !== "gzip" && coding !== "x-gzip") continue;
    const quality = parameters.find((parameter) => parameter.startsWith("q="));
    if (quality === undefined || Number(quality.slice(2)) > 0) return true;
  }
  return false;
}

/** Reports whether If-None-Match lists `etag` or "*", comparing weakly as RFC 9110 requires. */
function matchesIfNoneMatch(exchange: Exchange, etag: string): boolean {
  const values = exchange.headers["if-none-match"];
  if (values === undefined) return false;
  return values
    .join(",")
    .split(",")
    .map((tag) => tag.trim().replace(/^W\//, ""))
    .some((tag) => tag === "*" || tag === etag);
}

function serveStatic(exchange: Exchange): void {
  const name = exchange.params[0] ?? "";
  // Mattermost's static file handler (web/static.go) returns 404 for paths ending in "/".
  if (name === "" || name.endsWith("/")) {
    send(exchange, 404, [["Content-Type", "text/plain; charset=utf-8"]], "404 page not found\n");
    return;
  }
  const file = staticFile(name);
  const gzip = acceptsGzip(exchange);
  const etag = gzip ? file.gzipEtag : file.etag;
  const headers: HeaderPairs = [
    ["Cache-Control", "max-age=31556926, public"],
    ["ETag", etag],
    ["Vary", "Accept-Encoding"],
  ];
  if (matchesIfNoneMatch(exchange, etag)) {
    send(exchange, 304, headers);
    return;
  }
  headers.push(["Content-Type", file.contentType]);
  if (gzip) headers.push(["Content-Encoding", "gzip"]);
  send(exchange, 200, headers, gzip ? file.gzipped : file.body);
}

// ---------------------------------------------------------------------------------------
// Large transfers

/** Byte range `[start, end)` requested by a single-range `Range` header. */
type RangeRequest = { start: number; end: number } | "unsatisfiable" | null;

/**
 * Parses `Range: bytes=a-b`, `bytes=a-` and `bytes=-n` for a resource of `size` bytes.
 * Returns null when the header is absent, malformed or requests several ranges, because
 * a server may then ignore it and send the whole resource.
 */
function parseRange(header: string | undefined, size: number): RangeRequest {
  if (header === undefined) return null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (match === null) return null;
  const [, first = "", last = ""] = match;
  if (first === "" && last === "") return null;
  if (first === "") {
    const suffix = Number(last);
    if (suffix === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size };
  }
  const start = Number(first);
  const end = last === "" ? size : Math.min(Number(last) + 1, size);
  if (last !== "" && Number(last) < start) return null;
  if (start >= size) return "unsatisfiable";
  return { start, end };
}

/** Streams download bytes `[start, end)`, writing again only after the socket drains. */
function streamDownload(sink: ResponseSink, start: number, end: number): void {
  let offset = start;
  const pump = (): void => {
    while (offset < end) {
      if (sink.closed) return;
      const length = Math.min(DOWNLOAD_CHUNK, end - offset);
      const phase = offset % DOWNLOAD_PERIOD;
      offset += length;
      if (!sink.write(DOWNLOAD_PATTERN.subarray(phase, phase + length))) {
        sink.onDrain(pump);
        return;
      }
    }
    sink.end();
  };
  pump();
}

function serveDownload(exchange: Exchange): void {
  const id = exchange.params[0] ?? "";
  const sizeParam = exchange.query.get("size");
  const size = sizeParam === null ? DEFAULT_DOWNLOAD_BYTES : Number(sizeParam);
  if (!Number.isSafeInteger(size) || size < 0) {
    sendBadRequest(exchange, `size must be a non-negative integer, got ${JSON.stringify(sizeParam)}`);
    return;
  }

  const headers: HeaderPairs = [
    ["Content-Type", "application/octet-stream"],
    ["Content-Disposition", `attachment; filename="${id}.bin"`],
    ["Accept-Ranges", "bytes"],
    ["X-Content-Type-Options", "nosniff"],
  ];
  const range = parseRange(firstHeader(exchange, "range"), size);
  if (range === "unsatisfiable") {
    send(exchange, 416, [...headers, ["Content-Range", `bytes */${size}`]]);
    return;
  }

  let status = 200;
  let start = 0;
  let end = size;
  if (range !== null) {
    status = 206;
    ({ start, end } = range);
    headers.push(["Content-Range", `bytes ${start}-${end - 1}/${size}`]);
  }

  headers.push(["Content-Length", String(end - start)], ["X-Request-Id", newId()], ["X-Version-Id", VERSION_ID]);
  exchange.sink.writeHead(status, headers);
  if (exchange.method === "HEAD") {
    exchange.sink.end();
    return;
  }
  streamDownload(exchange.sink, start, end);
}

/** Counts and hashes the upload as it arrives, without keeping it. */
function receiveUpload(exchange: Exchange): void {
  const hash = createHash("sha256");
  let bytes = 0;
  exchange.bodyStream.on("data", (chunk: Buffer) => {
    bytes += chunk.length;
    exchange.record.bodyBytes = bytes;
    hash.update(chunk);
  });
  exchange.bodyStream.once("end", () => {
    sendJson(exchange, 201, { bytes, sha256: hash.digest("hex") });
  });
  // A client that aborts the upload gets no response, and its connection is already gone.
  exchange.bodyStream.once("error", () => exchange.sink.end());
}

// ---------------------------------------------------------------------------------------
// Other routes

function serveLogin(exchange: Exchange): void {
  const token = newId();
  const csrf = newId();
  sendJson(exchange, 200, USER, [
    ["Set-Cookie", `MMAUTHTOKEN=${token}; Path=/; HttpOnly`],
    ["Set-Cookie", `MMUSERID=${USER_ID}; Path=/`],
    ["Set-Cookie", `MMCSRF=${csrf}; Path=/`],
    ["Token", token],
  ]);
}

function serveCreatePost(exchange: Exchange): void {
  try {
    JSON.parse(exchange.body.toString("utf8"));
  } catch {
    sendJson(exchange, 400, { id: "api.context.invalid_body_param.app_error", status_code: 400 });
    return;
  }
  send(exchange, 201, [["Content-Type", "application/json"]], exchange.body);
}

function serveSlow(exchange: Exchange): void {
  const msParam = exchange.query.get("ms");
  const ms = msParam === null ? DEFAULT_SLOW_MS : Number(msParam);
  if (!Number.isSafeInteger(ms) || ms < 0) {
    sendBadRequest(exchange, `ms must be a non-negative integer, got ${JSON.stringify(msParam)}`);
    return;
  }
  const timer = setTimeout(() => {
    exchange.timers.delete(timer);
    if (!exchange.sink.closed) send(exchange, 200, [["Content-Type", "text/plain; charset=utf-8"]], "slow done");
  }, ms);
  exchange.timers.add(timer);
  exchange.sink.onClose(() => {
    clearTimeout(timer);
    exchange.timers.delete(timer);
  });
}

function serveEcho(exchange: Exchange): void {
  const { method, target, path, headers, rawHeaders, bodyBytes } = exchange.record;
  sendJson(exchange, 200, { method, target, path, headers, rawHeaders, bodyBytes });
}

// ---------------------------------------------------------------------------------------
// Route table

interface Route {
  name: string;
  /** Allowed methods, or null for any method. */
  methods: readonly string[] | null;
  /** Anchored pattern for the decoded path. Its capture groups become `params`. */
  pattern: RegExp;
  /** How the route uses the request body: ignore (count only), keep in memory, or stream it. */
  body: "ignore" | "keep" | "stream";
  /** Set for WebSocket routes, which take upgrades instead of running `serve`. */
  websocket?: true;
  serve(exchange: Exchange): void;
}

const SERVICE = "([A-Za-z0-9]+)";
const ID = "([A-Za-z0-9]+)";

function htmlRoute(name: string, pattern: RegExp): Route {
  return {
    name,
    methods: ["GET"],
    pattern,
    body: "ignore",
    serve: (exchange) => sendHtml(exchange, name, `stand-in route ${name}: ${exchange.path}`),
  };
}

function jsonRoute(name: string, methods: readonly string[] | null, pattern: RegExp, value: (exchange: Exchange) => unknown): Route {
  return { name, methods, pattern, body: "ignore", serve: (exchange) => sendJson(exchange, 200, value(exchange)) };
}

const ROUTES: readonly Route[] = [
  jsonRoute("system-ping", ["GET"], /^\/api\/v4\/system\/ping$/, () => ({ status: "OK" })),
  {
    name: "config-client",
    methods: ["GET"],
    pattern: /^\/api\/v4\/config\/client$/,
    body: "ignore",
    serve: (exchange) => send(exchange, 200, [["Content-Type", "application/json"]], CLIENT_CONFIG),
  },
  jsonRoute("license-client", ["GET"], /^\/api\/v4\/license\/client$/, () => ({ IsLicensed: "false" })),
  jsonRoute("notifications-ack", ["POST"], /^\/api\/v4\/notifications\/ack$/, () => ({ status: "OK" })),
  htmlRoute("login-desktop", /^\/login\/desktop$/),
  htmlRoute("saml-login", /^\/login\/sso\/saml$/),
  htmlRoute("openid", new RegExp(`^/oauth/${SERVICE}/(complete|login|mobile_login|signup)$`)),
  htmlRoute("oauth-api-v3-complete", new RegExp(`^/api/v3/oauth/${SERVICE}/complete$`)),
  htmlRoute("oauth-signup-login-complete", new RegExp(`^/(signup|login)/${SERVICE}/complete$`)),
  { name: "static", methods: ["GET", "HEAD"], pattern: /^\/static\/(.*)$/s, body: "ignore", serve: serveStatic },
  jsonRoute("users-me", ["GET"], /^\/api\/v4\/users\/me$/, () => USER),
  jsonRoute("users-me-teams", ["GET"], /^\/api\/v4\/users\/me\/teams$/, () => [TEAM]),
  jsonRoute("channel", ["GET"], new RegExp(`^/api/v4/channels/${ID}$`), (exchange) => ({
    id: exchange.params[0],
    team_id: TEAM.id,
    type: "O",
    display_name: "Town Square",
    name: "town-square",
  })),
  { name: "create-post", methods: ["POST"], pattern: /^\/api\/v4\/posts$/, body: "keep", serve: serveCreatePost },
  { name: "login", methods: ["POST"], pattern: /^\/api\/v4\/users\/login$/, body: "keep", serve: serveLogin },
  { name: "upload-file", methods: ["POST"], pattern: /^\/api\/v4\/files$/, body: "stream", serve: receiveUpload },
  {
    name: "download-file",
    methods: ["GET", "HEAD"],
    pattern: new RegExp(`^/api/v4/files/${ID}$`),
    body: "ignore",
    serve: serveDownload,
  },
  { name: "slow", methods: ["GET"], pattern: /^\/api\/v4\/slow$/, body: "ignore", serve: serveSlow },
  {
    name: "redirect-me",
    methods: ["GET"],
    pattern: /^\/api\/v4\/redirect-me$/,
    body: "ignore",
    serve: (exchange) => send(exchange, 302, [["Location", "/api/v4/users/me"]]),
  },
  {
    name: "no-content",
    methods: ["GET"],
    pattern: /^\/api\/v4\/no-content$/,
    body: "ignore",
    serve: (exchange) => send(exchange, 204, []),
  },
  { name: "echo", methods: null, pattern: /^\/api\/v4\/echo$/, body: "keep", serve: serveEcho },
  jsonRoute("hooks", null, new RegExp(`^/hooks/${ID}$`), (exchange) => ({ status: "OK", hook_id: exchange.params[0] })),
  { name: "websocket", methods: ["GET"], pattern: /^\/api\/v4\/websocket\/?$/, body: "ignore", websocket: true, serve: () => {} },
  {
    name: "websocket",
    methods: ["GET"],
    pattern: /^\/plugins\/([A-Za-z0-9._-]+)\/ws(?:\/.*)?$/s,
    body: "ignore",
    websocket: true,
    serve: () => {},
  },
];

/** Finds the route for a decoded path and method. A path that matches only with another method gets 404, not 405. */
function findRoute(method: string, path: string): { route: Route; params: string[] } | null {
  for (const route of ROUTES) {
    const match = route.pattern.exec(path);
    if (match === null) continue;
    if (route.methods !== null && !route.methods.includes(method)) continue;
    return { route, params: match.slice(1).map((value) => value ?? "") };
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// Server

function headerRecord(rawHeaders: readonly string[]): Record<string, string[]> {
  const headers: Record<string, string[]> = {};
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    const name = rawHeaders[index]!.toLowerCase();
    const value = rawHeaders[index + 1]!;
    const values = Object.hasOwn(headers, name) ? headers[name] : undefined;
    if (values !== undefined) {
      values.push(value);
      continue;
    }
    // defineProperty, because plain assignment of "__proto__" would set the prototype.
    Object.defineProperty(headers, name, { value: [value], enumerable: true, writable: true, configurable: true });
  }
  return headers;
}

const EMPTY_BODY = Buffer.alloc(0);

/** Reads the whole body, counting every byte and keeping up to `keepLimit` of them. */
function readBody(stream: Readable, record: ReceivedRequest, keepLimit: number): Promise<Buffer> {
  // A request without Content-Length or Transfer-Encoding has no body (RFC 9112 section 6.3),
  // so the route can run without waiting for the stream's "end" event.
  const contentLength = record.headers["content-length"]?.[0];
  if (record.headers["transfer-encoding"] === undefined && (contentLength === undefined || contentLength === "0")) {
    stream.resume();
    return Promise.resolve(EMPTY_BODY);
  }
  return new Promise((resolve, reject) => {
    const kept: Buffer[] = [];
    let keptBytes = 0;
    stream.on("data", (chunk: Buffer) => {
      record.bodyBytes += chunk.length;
      if (keptBytes + chunk.length <= keepLimit) {
        kept.push(chunk);
        keptBytes += chunk.length;
      }
    });
    stream.once("end", () => resolve(Buffer.concat(kept, keptBytes)));
    stream.once("error", reject);
  });
}

export function startStandInMattermost(options: StandInOptions = {}): Promise<StandInMattermost> {
  const host = options.host ?? "127.0.0.1";
  const quiet = options.quiet ?? false;
  const recording = options.record ?? true;
  const received: ReceivedRequest[] = [];
  const sockets = new Set<Duplex>();
  const timers = new Set<ReturnType<typeof setTimeout>>();

  function log(record: ReceivedRequest, note = ""): void {
    if (quiet) return;
    const route = record.route ?? "-";
    console.log(`${record.method} ${record.target} ${record.status} route=${route} body=${record.bodyBytes}${note}`);
  }

  function startRecord(req: IncomingMessage): ReceivedRequest {
    const target = req.url ?? "";
    const questionMark = target.indexOf("?");
    const record: ReceivedRequest = {
      method: req.method ?? "",
      target,
      path: questionMark === -1 ? target : target.slice(0, questionMark),
      headers: headerRecord(req.rawHeaders),
      rawHeaders: [...req.rawHeaders],
      bodyBytes: 0,
      route: null,
      status: 0,
    };
    if (recording) received.push(record);
    return record;
  }

  /** Wraps a sink so that the record gets the status and the log line is printed. */
  function recordingSink(sink: ResponseSink, record: ReceivedRequest): ResponseSink {
    return {
      ...sink,
      writeHead(status, headers) {
        record.status = status;
        const location = headers.find(([name]) => name === "Location")?.[1];
        log(record, location === undefined ? "" : ` location=${location}`);
        sink.writeHead(status, headers);
      },
      get closed() {
        return sink.closed;
      },
    };
  }

  /** Routes one request. `upgrade` is set when the request came through the `upgrade` event. */
  async function handle(req: IncomingMessage, sink: ResponseSink, bodyStream: Readable, upgrade: { socket: Duplex; head: Buffer } | null): Promise<void> {
    const record = startRecord(req);
    const exchange: Exchange = {
      method: record.method,
      path: record.path,
      query: new URLSearchParams(),
      headers: record.headers,
      record,
      sink: recordingSink(sink, record),
      params: [],
      body: Buffer.alloc(0),
      bodyStream,
      timers,
    };

    const check = checkRequestTarget(record.target);
    if (check.kind !== "route") {
      await readBody(bodyStream, record, 0);
      if (check.kind === "invalid") {
        sendBadRequest(exchange, check.reason);
        return;
      }
      record.route = "redirect";
      send(exchange, 301, [["Location", check.location]]);
      return;
    }
    exchange.path = check.path;
    exchange.query = new URLSearchParams(check.query ?? "");

    const found = findRoute(record.method, check.path);
    if (found === null) {
      await readBody(bodyStream, record, 0);
      sendNotFound(exchange);
      return;
    }
    const { route, params } = found;
    record.route = route.name;
    exchange.params = params;

    if (route.websocket === true) {
      await readBody(bodyStream, record, 0);
      const decision = checkUpgradeRequest(record.method, record.headers);
      if (!decision.ok || upgrade === null) {
        const status = decision.ok ? 400 : decision.status;
        const reason = decision.ok ? "not an upgrade request" : decision.reason;
        send(exchange, status, [["Content-Type", "text/plain; charset=utf-8"], ["Sec-Websocket-Version", "13"]], `${http.STATUS_CODES[status]}: websocket: ${reason}\n`);
        return;
      }
      record.status = 101;
      log(record);
      upgrade.socket.write(switchingProtocolsResponse(decision.accept, decision.protocol));
      new EchoWebSocket(upgrade.socket, upgrade.head);
      return;
    }

    if (route.body === "stream") {
      route.serve(exchange);
      return;
    }
    exchange.body = await readBody(bodyStream, record, route.body === "keep" ? KEPT_BODY_LIMIT : 0);
    if (route.body === "keep" && exchange.body.length < record.bodyBytes) {
      sendJson(exchange, 413, { id: "api.context.request_body_too_large.app_error", status_code: 413 });
      return;
    }
    route.serve(exchange);
  }

  // Most failures here are clients that disconnect mid-request, which tests do on purpose.
  function reportError(error: unknown, target: string | undefined): void {
    if (quiet) return;
    console.error(`request ${JSON.stringify(target)} failed: ${(error as Error).message}`);
  }

  const server = http.createServer((req, res) => {
    handle(req, serverResponseSink(res), req, null).catch((error: unknown) => {
      reportError(error, req.url);
      res.destroy();
    });
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;

  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  // Bun's node:http emits "upgrade" for any request with "Connection: upgrade" and an Upgrade
  // header, on every path. Non-WebSocket routes still respond, over the raw socket, and then
  // close the connection.
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    // NOTE: the body of an upgrade request that is not a WebSocket handshake is not read,
    // because node:http hands over the socket with the body unparsed. The route gets an empty body.
    handle(req, rawSocketSink(socket), Readable.from([]), { socket, head }).catch((error: unknown) => {
      reportError(error, req.url);
      socket.destroy();
    });
  });

  // Bun's node:http reports here both unparsable requests and clients that disconnect mid-request.
  server.on("clientError", (error: Error & { code?: string }, socket: Duplex) => {
    if (!quiet) console.log(`client connection error ${error.code ?? ""}: ${error.message}`);
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    else socket.destroy();
  });

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => {
      server.off("error", reject);
      const port = (server.address() as AddressInfo).port;
      const urlHost = host.includes(":") ? `[${host}]` : host;
      resolve({
        url: `http://${urlHost}:${port}`,
        port,
        received,
        clear() {
          received.length = 0;
        },
        close() {
          return new Promise<void>((done) => {
            for (const timer of timers) clearTimeout(timer);
            timers.clear();
            server.close(() => done());
            server.closeAllConnections();
            for (const socket of sockets) socket.destroy();
          });
        },
      });
    });
  });
}

const STAND_IN_USAGE = "Usage: stand-in-mattermost.ts [--port 8065] [--host 127.0.0.1] [--quiet]";

function parseArguments(argv: readonly string[]): StandInOptions {
  const options: StandInOptions = { port: 8065, record: false };
  for (let index = 0; index < argv.length; index++) {
    const argument = argv[index];
    const value = argv[index + 1];
    if (argument === "--help" || argument === "-h") {
      console.log(STAND_IN_USAGE);
      process.exit(0);
    } else if (argument === "--quiet") {
      options.quiet = true;
    } else if (argument === "--port" && value !== undefined) {
      options.port = Number(value);
      index++;
    } else if (argument === "--host" && value !== undefined) {
      options.host = value;
      index++;
    } else {
      throw new Error(`unknown argument ${JSON.stringify(argument)}. ${STAND_IN_USAGE}`);
    }
  }
  if (!Number.isInteger(options.port) || options.port! < 0 || options.port! > 65535) {
    throw new Error(`invalid --port ${options.port}: expected an integer from 0 to 65535`);
  }
  return options;
}

if (import.meta.main) {
  let options: StandInOptions;
  try {
    options = parseArguments(process.argv.slice(2));
  } catch (error) {
    console.error((error as Error).message);
    process.exit(2);
  }
  let standIn: StandInMattermost;
  try {
    standIn = await startStandInMattermost(options);
  } catch (error) {
    console.error(`failed to listen on ${options.host ?? "127.0.0.1"}:${options.port}: ${(error as Error).message}`);
    process.exit(1);
  }
  console.log(`stand-in Mattermost listening on ${standIn.url}`);
  const stop = (): void => {
    standIn.close().then(() => process.exit(0));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

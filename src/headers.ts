// Header rules for forwarding: which headers never cross the gate, which forwarding
// headers the gate sets itself, and the heads it writes in both directions.
import type { HeaderLine } from "./http1.ts";

export const SECRET_HEADER = "x-mattermost-preauth-secret";

/**
 * Hop-by-hop headers, meaningful only for one connection: RFC 9110 section 7.6.1 names
 * Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and Upgrade; RFC 9110
 * section 11.7 makes Proxy-Authenticate and Proxy-Authorization the business of the
 * proxy they are meant for. Trailer goes too, since the gate does not forward trailers.
 */
export const HOP_BY_HOP_HEADERS: readonly string[] = [
  "connection",
  "proxy-connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "proxy-authenticate",
  "proxy-authorization",
];

/**
 * Forwarding headers, kept only from a trusted proxy. The gate writes the first three
 * itself. The others describe a proxy or CDN in front (RFC 7239 `Forwarded`, and de facto
 * headers that servers can be configured to take the client address or URL from), which a
 * client cannot vouch for.
 */
const FORWARDING_HEADERS: readonly string[] = [
  "x-forwarded-for",
  "x-real-ip",
  "x-forwarded-proto",
  "forwarded",
  "x-forwarded-host",
  "x-forwarded-port",
  "x-forwarded-server",
  "x-forwarded-prefix",
  "x-forwarded-ssl",
  "x-forwarded-scheme",
  "x-forwarded-uri",
  "x-original-url",
  "x-client-ip",
  "true-client-ip",
];

/**
 * Request headers the gate never copies upstream: the hop-by-hop ones, the secret, and
 * the framing and Expect headers, which the gate writes itself for the body it sends.
 */
const DROPPED_REQUEST_HEADERS: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP_HEADERS,
  SECRET_HEADER,
  "content-length",
  "expect",
]);
const DROPPED_REQUEST_HEADERS_UNTRUSTED: ReadonlySet<string> = new Set([...DROPPED_REQUEST_HEADERS, ...FORWARDING_HEADERS]);

/** Response headers never copied to the client; the gate writes framing headers itself. */
const DROPPED_RESPONSE_HEADERS: ReadonlySet<string> = new Set(HOP_BY_HOP_HEADERS);

/** The sender of a request, as far as the gate can tell. */
export interface ClientInfo {
  /** Address of the TCP peer. */
  readonly address: string;
  /** The peer is a configured trusted proxy, so its forwarding headers are kept. */
  readonly trusted: boolean;
  readonly protocol: "http" | "https";
}

/** Returns the values of every `name` line joined with ", ", or null when there is none. */
export function headerValue(headers: readonly HeaderLine[], name: string): string | null {
  let value: string | null = null;
  for (let i = 0; i < headers.length; i++) {
    const line = headers[i]!;
    if (line.lower === name) value = value === null ? line.value : `${value}, ${line.value}`;
  }
  return value;
}

/** Lower-case header names listed in `Connection`; Host is never among them. */
function connectionNamed(headers: readonly HeaderLine[]): Set<string> | null {
  let named: Set<string> | null = null;
  for (const line of headers) {
    if (line.lower !== "connection") continue;
    for (const token of line.value.split(",")) {
      const name = token.trim().toLowerCase();
      // Host is end-to-end; a client must not be able to drop it through Connection.
      if (name !== "" && name !== "host") (named ??= new Set()).add(name);
    }
  }
  return named;
}

/**
 * Builds the request head sent to Mattermost. Removes the secret and the hop-by-hop
 * headers and every header that `Connection` names, keeps Host and Origin unchanged,
 * sets the forwarding headers and ends with `extra`, which contains the framing lines.
 * Header lines were checked by the parser, so none can break the head.
 */
export function upstreamRequestHead(
  method: string,
  target: string,
  headers: readonly HeaderLine[],
  client: ClientInfo,
  defaultHost: string,
  extra: string,
): Buffer {
  const dropped = client.trusted ? DROPPED_REQUEST_HEADERS : DROPPED_REQUEST_HEADERS_UNTRUSTED;
  const named = connectionNamed(headers);
  let head = `${method} ${target} HTTP/1.1\r\n`;
  let hasHost = false;
  let forwardedFor: string | null = null;
  let hasRealIp = false;
  let hasProto = false;
  for (let i = 0; i < headers.length; i++) {
    const line = headers[i]!;
    const lower = line.lower;
    if (dropped.has(lower) || (named !== null && named.has(lower))) continue;
    if (lower === "x-forwarded-for") {
      forwardedFor = forwardedFor === null ? line.value : `${forwardedFor}, ${line.value}`;
      continue;
    }
    if (lower === "host") hasHost = true;
    else if (lower === "x-real-ip") hasRealIp = true;
    else if (lower === "x-forwarded-proto") hasProto = true;
    head += `${line.name}: ${line.value}\r\n`;
  }
  // HTTP/1.0 allows a request without Host; Mattermost's HTTP/1.1 server does not.
  if (!hasHost) head += `Host: ${defaultHost}\r\n`;
  head += `X-Forwarded-For: ${forwardedFor ? `${forwardedFor}, ${client.address}` : client.address}\r\n`;
  if (!hasRealIp) head += `X-Real-IP: ${client.address}\r\n`;
  if (!hasProto) head += `X-Forwarded-Proto: ${client.protocol}\r\n`;
  return Buffer.from(`${head}${extra}\r\n`, "latin1");
}

/**
 * Builds the response head sent to the client from Mattermost's. It has the status and
 * reason as Mattermost sent them and every end-to-end header in order, with each Set-Cookie
 * on its own line. `extra` contains the framing and Connection lines the gate chose.
 * Content-Length is copied only when `keepLength` is true.
 */
export function clientResponseHead(
  status: number,
  reason: string,
  headers: readonly HeaderLine[],
  keepLength: boolean,
  extra: string,
): string {
  const named = connectionNamed(headers);
  let head = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (let i = 0; i < headers.length; i++) {
    const line = headers[i]!;
    const lower = line.lower;
    if (DROPPED_RESPONSE_HEADERS.has(lower) || (named !== null && named.has(lower))) continue;
    if (lower === "content-length" && !keepLength) continue;
    head += `${line.name}: ${line.value}\r\n`;
  }
  return `${head}${extra}\r\n`;
}

// Header rules for forwarding: which headers never cross the gate, and which forwarding
// headers the gate sets itself.

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

/** Forwarding headers; the gate writes them unless the peer is a trusted proxy. */
const FORWARDING_HEADERS = ["x-forwarded-for", "x-real-ip", "x-forwarded-proto"] as const;

/** Removes hop-by-hop headers and every header that `Connection` names. */
export function removeHopByHop(headers: Headers): void {
  const connection = headers.get("connection");
  if (connection !== null) {
    for (const token of connection.split(",")) {
      const name = token.trim().toLowerCase();
      // Host is end-to-end; a client must not be able to drop it through Connection.
      if (name !== "" && name !== "host") headers.delete(name);
    }
  }
  for (const name of HOP_BY_HOP_HEADERS) headers.delete(name);
}

/** The sender of a request, as far as the gate can tell. */
export interface ClientInfo {
  /** Address of the TCP peer. */
  readonly address: string;
  /** The peer is a configured trusted proxy, so its forwarding headers are kept. */
  readonly trusted: boolean;
  readonly protocol: "http" | "https";
}

/**
 * Turns the client's headers into the headers sent upstream, in place: removes the secret
 * and the hop-by-hop headers, keeps Host and Origin unchanged and sets the forwarding
 * headers. Changing them in place saves a copy per request.
 */
export function toUpstreamHeaders(headers: Headers, client: ClientInfo): Headers {
  const forwardedFor = client.trusted ? headers.get("x-forwarded-for") : null;
  removeHopByHop(headers);
  headers.delete(SECRET_HEADER);
  setForwardingHeaders(headers, forwardedFor, client);
  return headers;
}

/** Sets the forwarding headers; `forwardedFor` is a trusted peer's X-Forwarded-For, or null. */
export function setForwardingHeaders(headers: Headers, forwardedFor: string | null, client: ClientInfo): void {
  if (!client.trusted) {
    for (const name of FORWARDING_HEADERS) headers.delete(name);
  }
  headers.set("x-forwarded-for", forwardedFor ? `${forwardedFor}, ${client.address}` : client.address);
  if (!headers.has("x-real-ip")) headers.set("x-real-ip", client.address);
  if (!headers.has("x-forwarded-proto")) headers.set("x-forwarded-proto", client.protocol);
}

/**
 * Builds a Headers object from node:http's `rawHeaders`. Repeated headers are joined
 * with ", " as Headers.append does, so a repeated secret or Content-Length stays
 * visible whatever `req.headers` does with repeats.
 */
export function headersFromRaw(rawHeaders: readonly string[]): Headers {
  const headers = new Headers();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) headers.append(rawHeaders[i]!, rawHeaders[i + 1]!);
  return headers;
}

/** Response headers not copied one by one: hop-by-hop ones, and Set-Cookie, added apart. */
const DROPPED_RESPONSE_HEADERS: ReadonlySet<string> = new Set([...HOP_BY_HOP_HEADERS, "set-cookie"]);

/**
 * Lists an upstream response's headers for `writeHead`, without hop-by-hop headers.
 * Every Set-Cookie stays a separate line; Content-Length stays as Mattermost sent it.
 */
export function clientResponseHeaders(upstream: Headers): string[] {
  let dropped = DROPPED_RESPONSE_HEADERS;
  const connection = upstream.get("connection");
  if (connection !== null) {
    const named = connection.split(",").map((token) => token.trim().toLowerCase());
    dropped = new Set([...DROPPED_RESPONSE_HEADERS, ...named]);
  }
  const list: string[] = [];
  upstream.forEach((value, name) => {
    if (!dropped.has(name)) list.push(name, value);
  });
  for (const cookie of upstream.getSetCookie()) list.push("set-cookie", cookie);
  return list;
}

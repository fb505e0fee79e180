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
 * Builds the headers sent upstream: the client's headers without the secret and the
 * hop-by-hop headers, with Host and Origin unchanged and the forwarding headers set.
 */
export function upstreamRequestHeaders(incoming: Headers, client: ClientInfo): Headers {
  const headers = new Headers(incoming);
  removeHopByHop(headers);
  headers.delete(SECRET_HEADER);
  setForwardingHeaders(headers, incoming, client);
  return headers;
}

export function setForwardingHeaders(headers: Headers, incoming: Headers, client: ClientInfo): void {
  if (!client.trusted) {
    for (const name of FORWARDING_HEADERS) headers.delete(name);
  }
  const forwardedFor = client.trusted ? incoming.get("x-forwarded-for") : null;
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

/**
 * Lists an upstream response's headers for `writeHead`, without hop-by-hop headers.
 * Every Set-Cookie stays a separate line; Content-Length stays as Mattermost sent it.
 */
export function clientResponseHeaders(upstream: Headers): string[] {
  const headers = new Headers(upstream);
  removeHopByHop(headers);
  const list: string[] = [];
  headers.forEach((value, name) => {
    if (name !== "set-cookie") list.push(name, value);
  });
  for (const cookie of headers.getSetCookie()) list.push("set-cookie", cookie);
  return list;
}

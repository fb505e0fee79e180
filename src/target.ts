// The request target as the gate parses it.
//
// The gate's own parser (src/http1.ts) hands over the raw request target exactly as the
// client wrote it: dot segments, "\" and percent-escapes are all still there. The gate
// matches that raw path and writes the same path and query into the request line it
// sends to Mattermost, so Mattermost receives exactly what was classified.

/** A request target split into the path the gate matches and the query it forwards. */
export interface RequestTarget {
  /** The path exactly as the client sent it and as it is sent upstream, still percent-encoded. */
  readonly path: string;
  /** Everything after the first "?", without the "?"; null when there is none. */
  readonly query: string | null;
}

export type TargetProblem = "fragment" | "malformed";

export type ParsedTarget =
  | { readonly ok: true; readonly target: RequestTarget }
  | { readonly ok: false; readonly problem: TargetProblem };

/** Matches the scheme and authority of an absolute-form target (RFC 9112 section 3.2.2). */
const ABSOLUTE_FORM_PREFIX = /^https?:\/\/[^/?]*/i;

/**
 * Parses a raw request target. Origin-form (`/path?query`) is kept as it is; absolute-form
 * (`http://host/path?query`) keeps only its path and query, because the gate always
 * connects to the configured upstream. Every other form (`*`, authority-form) is malformed.
 */
export function parseRequestTarget(raw: string): ParsedTarget {
  // A raw "#" is not allowed in a request target (RFC 9112 section 3.2), and a server
  // that drops everything after it would route less than the gate matched.
  if (raw.includes("#")) return { ok: false, problem: "fragment" };
  let pathAndQuery: string;
  if (raw.startsWith("/")) {
    pathAndQuery = raw;
  } else {
    const prefix = ABSOLUTE_FORM_PREFIX.exec(raw);
    if (prefix === null) return { ok: false, problem: "malformed" };
    const rest = raw.slice(prefix[0].length);
    // An empty path in absolute-form stands for "/" (RFC 9112 section 3.2.2).
    pathAndQuery = rest.startsWith("/") ? rest : `/${rest}`;
  }
  const queryStart = pathAndQuery.indexOf("?");
  const path = queryStart < 0 ? pathAndQuery : pathAndQuery.slice(0, queryStart);
  const query = queryStart < 0 ? null : pathAndQuery.slice(queryStart + 1);
  return { ok: true, target: { path, query } };
}

/** Returns the path and query as one origin-form target. */
export function targetString(target: RequestTarget): string {
  return target.query === null ? target.path : `${target.path}?${target.query}`;
}

/**
 * Characters that URL parsing leaves as they are in a path. A path of only these, with no
 * segment that starts like a dot segment, skips the full parse, which costs far more.
 */
const PLAIN_PATH = /^[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/;
const DOT_SEGMENT_START = /\/(?:\.|%2e)/i;

/**
 * Reports whether the path is in the canonical form a URL parser leaves unchanged: no dot
 * segments, no "\\", no leading "//" and no character that needs a percent-escape, such
 * as `"`, `{`, `^` or backtick. Mattermost's router cleans any other path before routing
 * it, or redirects it, so the gate forwards only paths that reach the route it matched.
 *
 * The query never takes part in matching or routing, so it is not checked.
 */
export function isForwardable(target: RequestTarget): boolean {
  if (target.path.startsWith("//")) return false;
  if (PLAIN_PATH.test(target.path) && !DOT_SEGMENT_START.test(target.path)) return true;
  try {
    return new URL(`http://gate.invalid${target.path}`).pathname === target.path;
  } catch {
    return false;
  }
}

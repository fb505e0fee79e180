// The request target as the gate sees it, and the upstream URL built from it.
//
// Bun's HTTP server hands the gate `request.url` already parsed by the WHATWG URL
// parser: "." and ".." segments (also spelled %2e) are resolved, "\" becomes "/", and an
// absolute-form target keeps only its path and query. The gate matches that path and
// forwards that same path, so Mattermost receives exactly the path that was classified.
// test/bun-behaviour.test.ts pins this behaviour of Bun.

/** A request target split into the path the gate matches and the query it forwards. */
export interface RequestTarget {
  /** The path exactly as it will be sent upstream, still percent-encoded. */
  readonly path: string;
  /** Everything after the first "?", without the "?"; null when there is none. */
  readonly query: string | null;
}

export type TargetProblem = "fragment" | "malformed";

export type ParsedTarget =
  | { readonly ok: true; readonly target: RequestTarget }
  | { readonly ok: false; readonly problem: TargetProblem };

/** Splits the absolute URL that Bun reports for a request into path and query. */
export function parseRequestUrl(url: string): ParsedTarget {
  const schemeEnd = url.indexOf("://");
  const pathStart = schemeEnd < 0 ? -1 : url.indexOf("/", schemeEnd + 3);
  if (pathStart < 0) return { ok: false, problem: "malformed" };
  // A raw "#" is not allowed in a request target (RFC 9112 section 3.2), and fetch()
  // would drop everything after it, so the gate would forward less than it matched.
  if (url.includes("#", pathStart)) return { ok: false, problem: "fragment" };

  const queryStart = url.indexOf("?", pathStart);
  const path = queryStart < 0 ? url.slice(pathStart) : url.slice(pathStart, queryStart);
  const query = queryStart < 0 ? null : url.slice(queryStart + 1);
  return { ok: true, target: { path, query } };
}

/**
 * Reports whether fetch() sends `path` unchanged. Bun's fetch() sends a path that starts
 * with "//" as "/", so such a path cannot be forwarded as it was matched.
 */
export function isForwardable(path: string): boolean {
  return !path.startsWith("//");
}

/** Builds the upstream URL: the configured origin, the matched path and the original query. */
export function upstreamUrl(origin: string, target: RequestTarget): string {
  return target.query === null ? origin + target.path : `${origin}${target.path}?${target.query}`;
}

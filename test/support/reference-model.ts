// A plain reading of Mattermost's documented pre-authentication whitelist, and of how the
// two possible upstreams, Mattermost's own router and nginx, read a raw request target.
// Tests compare the gate with it. It is written to be obvious, not fast, and it shares no
// code with src/.

export type SsoGroup = "saml" | "openid" | "oauth";

export interface ModelOptions {
  /** The optional single sign-on groups that are enabled. */
  readonly groups: readonly SsoGroup[];
  /** Service names allowed in `{service}`. An empty list means any `[A-Za-z0-9]+`. */
  readonly services: readonly string[];
}

interface Location {
  readonly name: string;
  readonly group: "always" | SsoGroup;
  /** The nginx location modifier: `=` exact, `^~` prefix, `~` case-sensitive regex. */
  readonly modifier: "=" | "^~" | "~";
  /** The location's URI or regex, with `{service}` standing for the service pattern. */
  readonly uri: string;
}

// The documented locations, one a line, listed in nginx's order of precedence: exact
// matches, then the `^~` prefix (which stops the regex search), then regexes in order.
// Everything else falls to `location /`, which requires the secret.
export const LOCATIONS: readonly Location[] = [
  { name: "notifications-ack", group: "always", modifier: "=", uri: "/api/v4/notifications/ack" },
  { name: "config-client", group: "always", modifier: "=", uri: "/api/v4/config/client" },
  { name: "login-desktop", group: "always", modifier: "=", uri: "/login/desktop" },
  { name: "saml-login", group: "saml", modifier: "=", uri: "/login/sso/saml" },
  { name: "static", group: "always", modifier: "^~", uri: "/static/" },
  { name: "openid", group: "openid", modifier: "~", uri: "^/oauth/{service}/(complete|login|mobile_login|signup)$" },
  { name: "oauth-api-v3-complete", group: "oauth", modifier: "~", uri: "^/api/v3/oauth/{service}/complete$" },
  { name: "oauth-signup-login-complete", group: "oauth", modifier: "~", uri: "^/(signup|login)/{service}/complete$" },
];

/** Returns the regex source for `{service}`: the documented class, or the listed names. */
export function servicePattern(services: readonly string[]): string {
  return services.length === 0 ? "[A-Za-z0-9]+" : `(${services.join("|")})`;
}

/** Lists the locations that `options` enables, each with `{service}` filled in. */
export function enabledLocations(options: ModelOptions): Location[] {
  const enabled = LOCATIONS.filter((location) => location.group === "always" || options.groups.includes(location.group));
  return enabled.map((location) => ({ ...location, uri: location.uri.replace("{service}", servicePattern(options.services)) }));
}

/**
 * Returns the name of the whitelist location that lets `path` through, or null when the
 * secret is required. `path` is a decoded, normalised path without the query. A regex's
 * `$` matches only at the end, as a reader expects; see nginxWhitelistedBy for PCRE's.
 */
export function whitelistedBy(path: string, options: ModelOptions): string | null {
  return firstMatch(path, enabledLocations(options));
}

/**
 * Returns what nginx matches for `path`. It differs from whitelistedBy in one way: PCRE,
 * which nginx uses, lets `$` match before a final "\n" too, so nginx lets
 * "/oauth/gitlab/complete%0a" through.
 */
export function nginxWhitelistedBy(path: string, options: ModelOptions): string | null {
  const locations = enabledLocations(options).map((location) =>
    location.modifier === "~" ? { ...location, uri: location.uri.replace(/\$$/, "\\n?$") } : location,
  );
  return firstMatch(path, locations);
}

function firstMatch(path: string, locations: readonly Location[]): string | null {
  for (const location of locations) {
    if (location.modifier === "=" && path === location.uri) return location.name;
    if (location.modifier === "^~" && path.startsWith(location.uri)) return location.name;
    if (location.modifier === "~" && new RegExp(location.uri).test(path)) return location.name;
  }
  return null;
}

// Characters of a canonical path segment: the RFC 3986 `pchar` set without percent-escapes
// and without ";". Every server reads such a path the same way. The gate rejects ";" on
// purpose, because some servers treat it as a parameter delimiter, so a path with ";" is
// tested among the hostile ones instead.
export const CANONICAL_SEGMENT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@";

/**
 * Reports whether `path` is canonical: it starts with "/", has no empty segment except
 * after a final "/", no "." or ".." segment, and only canonical characters.
 */
export function isCanonicalPath(path: string): boolean {
  if (!path.startsWith("/")) return false;
  const segments = path.slice(1).split("/");
  if (segments.at(-1) === "") segments.pop();
  for (const segment of segments) {
    if (segment === "" || segment === "." || segment === "..") return false;
    for (const char of segment) {
      if (!CANONICAL_SEGMENT_CHARS.includes(char)) return false;
    }
  }
  return true;
}

/** How an upstream reads a request target. */
export type UpstreamView =
  | { readonly kind: "route"; readonly path: string }
  | { readonly kind: "redirect"; readonly location: string }
  | { readonly kind: "invalid" };

/** Splits an origin-form target into its path and query, or returns null for any other form. */
function splitTarget(target: string): { path: string; query: string | null } | null {
  if (!target.startsWith("/")) return null;
  const queryStart = target.indexOf("?");
  if (queryStart < 0) return { path: target, query: null };
  return { path: target.slice(0, queryStart), query: target.slice(queryStart + 1) };
}

/** Decodes %XX escapes as UTF-8 bytes, or returns null when an escape is malformed. */
function percentDecode(path: string): string | null {
  if (/%(?![0-9A-Fa-f]{2})/.test(path)) return null;
  const bytes: number[] = [];
  for (let index = 0; index < path.length; index++) {
    if (path[index] === "%") {
      bytes.push(Number.parseInt(path.slice(index + 1, index + 3), 16));
      index += 2;
    } else {
      bytes.push(...new TextEncoder().encode(path[index]!));
    }
  }
  // Invalid UTF-8, such as the overlong %c0%ae, becomes U+FFFD and so never a "." or "/".
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** Go's path.Clean for a rooted path: merges "//", resolves "." and "..", drops a final "/". */
function goPathClean(path: string): string {
  const output: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") output.pop();
    else output.push(segment);
  }
  return `/${output.join("/")}`;
}

/**
 * Mattermost's router (Go net/http with gorilla/mux) reading an origin-form target. Go
 * percent-decodes the path, and mux cleans it with path.Clean and puts back a final "/".
 * If that changes the decoded path, or a raw "#" is in it, mux sends a 301 redirect and
 * runs no route. Otherwise the route for the decoded path runs.
 *
 * NOTE: Mattermost also redirects on any %2f and %00; this model lets those reach a route
 * unless cleaning changes them, so it errs towards assuming that a route runs.
 */
export function mattermostView(target: string): UpstreamView {
  const split = splitTarget(target);
  if (split === null || /[\x00-\x20\x7f]/.test(target)) return { kind: "invalid" };
  const decoded = percentDecode(split.path);
  if (decoded === null) return { kind: "invalid" };

  let cleaned = goPathClean(decoded);
  if (decoded.endsWith("/") && cleaned !== "/") cleaned += "/";
  if (cleaned !== decoded || split.path.includes("#")) return { kind: "redirect", location: cleaned };
  return { kind: "route", path: decoded };
}

/**
 * Resolves "." and ".." segments and merges repeated slashes the way nginx does: a path
 * that ends in "/", "/." or "/.." keeps a final "/". Returns null when ".." would climb
 * above the root, which nginx rejects with 400.
 */
function nginxNormalise(path: string): string | null {
  const output: string[] = [];
  const segments = path.split("/").slice(1);
  for (const segment of segments) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") {
      if (output.length === 0) return null;
      output.pop();
    } else {
      output.push(segment);
    }
  }
  const last = segments.at(-1);
  const endsWithSlash = last === "" || last === "." || last === "..";
  if (output.length === 0) return "/";
  return `/${output.join("/")}${endsWithSlash ? "/" : ""}`;
}

/**
 * nginx reading an origin-form target: the path ends at "?" or at a raw "#", %XX escapes
 * are decoded (%00 and malformed escapes are invalid), then "." and ".." are resolved and
 * repeated slashes merged. ".." above the root is invalid. Locations match the result.
 */
export function nginxView(target: string): UpstreamView {
  if (!target.startsWith("/") || /[\x00-\x20\x7f]/.test(target)) return { kind: "invalid" };
  const end = target.search(/[?#]/);
  const rawPath = end < 0 ? target : target.slice(0, end);
  if (/%00/.test(rawPath)) return { kind: "invalid" };
  const decoded = percentDecode(rawPath);
  if (decoded === null) return { kind: "invalid" };
  const resolved = nginxNormalise(decoded);
  return resolved === null ? { kind: "invalid" } : { kind: "route", path: resolved };
}

/**
 * Reports whether an upstream's view lets no route outside the whitelist run. `match` is
 * whitelistedBy for Mattermost and nginxWhitelistedBy for nginx.
 */
export function staysInWhitelist(
  view: UpstreamView,
  options: ModelOptions,
  match: (path: string, options: ModelOptions) => string | null,
): boolean {
  if (view.kind !== "route") return true;
  return match(view.path, options) !== null;
}

// fast-check generators of request targets, from documented whitelist paths to hostile
// spellings, and of whitelist options. Each generated request prints as it would appear on
// the wire, so that a shrunk failure reads like "GET /static/..%2f..".
import fc from "fast-check";
import { CANONICAL_SEGMENT_CHARS, enabledLocations, isCanonicalPath, type ModelOptions, type SsoGroup } from "./reference-model.ts";

/** A generated request: a method and a raw request target. */
export class Probe {
  constructor(
    readonly target: string,
    readonly method: string = "GET",
  ) {}

  toString(): string {
    return `${this.method} ${printable(this.target)}`;
  }

  [fc.toStringMethod](): string {
    return this.toString();
  }
}

/** Spells control and non-ASCII characters as escapes, so that a report shows them. */
export function printable(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\uffff]/g, (char) => {
    const code = char.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

export const SSO_GROUP_NAMES: readonly SsoGroup[] = ["saml", "openid", "oauth"];

/** Service names of real identity providers, plus short ones. */
export const SERVICE_NAMES = ["gitlab", "google", "office365", "openid", "saml", "Okta2", "x"];

const SSO_ACTIONS = ["complete", "login", "mobile_login", "signup"];

/** Paths that need the secret and that an attacker would want to reach. */
export const PROTECTED_PATHS = [
  "/",
  "/api/v4/users/me",
  "/api/v4/system/ping",
  "/api/v4/websocket",
  "/api/v4/files/abc123",
  "/api/v4/config",
  "/api/v4/users/login",
  "/hooks/abc123",
  "/plugins/focalboard/api/v2/boards",
  "/login",
  "/static",
  "/oauth/gitlab",
  "/api/v3/oauth/gitlab",
];

/** Words that make up documented paths, used to build near misses. */
const PATH_WORDS = [
  "api", "v3", "v4", "notifications", "ack", "config", "client", "login", "desktop", "static",
  "sso", "saml", "oauth", "signup", "complete", "mobile_login", "users", "me", "system", "ping",
  ...SERVICE_NAMES,
];

/** Insertions that try to hide a separator, a dot segment or an end of path. */
const HOSTILE_TOKENS = [
  ".", "..", "./", "../", "/..", "/../", "/./", "%2e", "%2E", "%2e%2e", ".%2e", "%2e.", "%2E%2E",
  "%2f", "%2F", "..%2f", "%2e%2e%2f", "%5c", "%5C", "..%5c", "%00", "%0a", "%0d", "%09", "%20",
  "%25", "%252e", "%252f", "//", "///", "\\", "\\..\\", "..\\", ";", ";x=1", "..;", ";/", "#",
  "#/../", "?", "?/../", " ", "\t", "%c0%ae", "%c0%af", "%C0%AE", "%e0%80%ae", "%c1%9c", "\u00e9",
  "\u2024", "\uff0e", "\uff0f", "\u2215", "/static/", "/static/../", "+", "~", "*", "@", ":",
];

const serviceName = fc.oneof(
  fc.constantFrom(...SERVICE_NAMES),
  fc.stringMatching(/^[A-Za-z0-9]{1,10}$/),
);

export const canonicalSegment = fc
  .string({ unit: fc.constantFrom(...CANONICAL_SEGMENT_CHARS), minLength: 1, maxLength: 10 })
  .filter((segment) => segment !== "." && segment !== "..");

const staticPath = fc
  .tuple(fc.array(canonicalSegment, { maxLength: 4 }), fc.boolean())
  .map(([segments, trailingSlash]) => {
    const slash = trailingSlash && segments.length > 0 ? "/" : "";
    return `/static/${segments.join("/")}${slash}`;
  });

/** Builds a documented whitelisted path for one location with `service` filled in. */
function documentedPathFor(locationName: string, service: string, action: string, prefix: "signup" | "login"): string {
  switch (locationName) {
    case "openid":
      return `/oauth/${service}/${action}`;
    case "oauth-api-v3-complete":
      return `/api/v3/oauth/${service}/complete`;
    case "oauth-signup-login-complete":
      return `/${prefix}/${service}/complete`;
    default:
      throw new Error(`no path builder for location ${locationName}`);
  }
}

const EXACT_PATHS = ["/api/v4/notifications/ack", "/api/v4/config/client", "/login/desktop", "/login/sso/saml"];

/** Paths of every documented rule, with any service name. */
export const documentedPath: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...EXACT_PATHS),
  staticPath,
  fc
    .tuple(
      fc.constantFrom("openid", "oauth-api-v3-complete", "oauth-signup-login-complete"),
      serviceName,
      fc.constantFrom(...SSO_ACTIONS),
      fc.constantFrom("signup" as const, "login" as const),
    )
    .map(([location, service, action, prefix]) => documentedPathFor(location, service, action, prefix)),
);

/** Whitelist options: any set of groups, and no service restriction or some listed names. */
export const modelOptions: fc.Arbitrary<ModelOptions> = fc.record({
  groups: fc.subarray([...SSO_GROUP_NAMES]),
  services: fc.oneof(fc.constant([] as string[]), fc.subarray(SERVICE_NAMES, { minLength: 1 })),
});

/** Generates paths that `options` whitelists, for every enabled location. */
export function whitelistedPath(options: ModelOptions): fc.Arbitrary<string> {
  const allowedService = options.services.length === 0 ? serviceName : fc.constantFrom(...options.services);
  const choices = enabledLocations(options).map((location) => {
    if (location.modifier === "=") return fc.constant(location.uri);
    if (location.modifier === "^~") return staticPath;
    return fc
      .tuple(allowedService, fc.constantFrom(...SSO_ACTIONS), fc.constantFrom("signup" as const, "login" as const))
      .map(([service, action, prefix]) => documentedPathFor(location.name, service, action, prefix));
  });
  return fc.oneof(...choices);
}

/** Changes the case of one character, or of the whole path. */
const caseChange = (path: string) =>
  fc.oneof(
    fc.constant(path.toUpperCase()),
    fc.nat({ max: Math.max(path.length - 1, 0) }).map((index) => {
      const char = path[index] ?? "";
      const swapped = char === char.toLowerCase() ? char.toUpperCase() : char.toLowerCase();
      return path.slice(0, index) + swapped + path.slice(index + 1);
    }),
  );

/** Near misses: prefixes, extensions, trailing slashes and case changes of a path. */
const nearMiss = (path: string) =>
  fc.oneof(
    fc.nat({ max: path.length }).map((length) => path.slice(0, length) || "/"),
    canonicalSegment.map((segment) => `${path}${segment}`),
    canonicalSegment.map((segment) => `${path}/${segment}`),
    fc.constant(path.endsWith("/") ? path.slice(0, -1) || "/" : `${path}/`),
    caseChange(path),
  );

/** Paths built from the words of documented paths, such as "/oauth/login/complete". */
const wordPath = fc
  .tuple(fc.array(fc.oneof(fc.constantFrom(...PATH_WORDS), canonicalSegment), { minLength: 1, maxLength: 6 }), fc.boolean())
  .map(([words, trailingSlash]) => `/${words.join("/")}${trailingSlash ? "/" : ""}`);

const startingPath = fc.oneof(documentedPath, fc.constantFrom(...PROTECTED_PATHS));

/** Canonical paths in and around the whitelist. */
export const canonicalPath: fc.Arbitrary<string> = fc
  .oneof(
    { weight: 3, arbitrary: documentedPath },
    { weight: 3, arbitrary: startingPath.chain(nearMiss) },
    { weight: 2, arbitrary: wordPath },
    { weight: 1, arbitrary: fc.constantFrom(...PROTECTED_PATHS) },
  )
  .filter(isCanonicalPath);

const QUERY_PARTS = [
  "format=old", "time=1712345678901", "device_id=android_rn:abc123", "x=/static/", "a=b&c=d",
  "redirect_to=/api/v4/users/me", "state=..%2f..%2f", "%2e%2e", "/../", "?", "", "=", "&&",
];

const queryChars = `${CANONICAL_SEGMENT_CHARS};/?`;

/** A query that is valid in a request target (RFC 3986), without the "?". */
export const canonicalQuery: fc.Arbitrary<string> = fc
  .array(fc.oneof(fc.constantFrom(...QUERY_PARTS), fc.string({ unit: fc.constantFrom(...queryChars), maxLength: 12 })), {
    maxLength: 3,
  })
  .map((parts) => parts.join("&"));

/** Appends an optional query to a path. */
export const withQuery = (path: string) =>
  fc.option(canonicalQuery, { nil: null }).map((query) => (query === null ? path : `${path}?${query}`));

/** Canonical request targets: canonical paths with or without a valid query. */
export const canonicalTarget: fc.Arbitrary<Probe> = canonicalPath.chain(withQuery).map((target) => new Probe(target));

interface Edit {
  readonly kind: "insert" | "replace" | "case" | "trailing-slash";
  readonly position: number;
  readonly token: string;
}

const edit: fc.Arbitrary<Edit> = fc.record({
  kind: fc.constantFrom("insert", "insert", "insert", "replace", "case", "trailing-slash"),
  position: fc.nat({ max: 60 }),
  token: fc.constantFrom(...HOSTILE_TOKENS),
});

function applyEdit(path: string, change: Edit): string {
  const position = change.position % (path.length + 1);
  switch (change.kind) {
    case "insert":
      return path.slice(0, position) + change.token + path.slice(position);
    case "replace":
      return path.slice(0, position) + change.token + path.slice(position + 1);
    case "case": {
      const char = path.charAt(position);
      const swapped = char === char.toLowerCase() ? char.toUpperCase() : char.toLowerCase();
      return path.slice(0, position) + swapped + path.slice(position + 1);
    }
    case "trailing-slash":
      return path.endsWith("/") ? path.slice(0, -1) : `${path}/`;
  }
}

/** Documented and protected paths with one to three hostile edits. */
const editedPath = fc
  .tuple(fc.oneof(startingPath, wordPath), fc.array(edit, { minLength: 1, maxLength: 3 }))
  .map(([path, edits]) => edits.reduce(applyEdit, path));

/** Joints that try to climb out of one path into the next. */
const TRAVERSALS = ["/../", "/..", "/%2e%2e/", "/.%2e/", "/..%2f", "%2f..%2f", "/..%5c", "\\..\\", "/..;/", "/%c0%ae%c0%ae/", "/./", "//", "#", "?", ";"];

/** Two paths joined by a traversal, such as "/static/..%2f/api/v4/users/me". */
const splicedPath = fc
  .tuple(startingPath, fc.array(fc.constantFrom(...TRAVERSALS, ...HOSTILE_TOKENS), { minLength: 1, maxLength: 4 }), startingPath)
  .map(([first, joints, second]) => `${first}${joints.join("")}${second}`);

/** Hostile request targets: edited or spliced paths, with or without a query. */
export const hostileTarget: fc.Arbitrary<Probe> = fc
  .tuple(fc.oneof(editedPath, splicedPath), fc.option(canonicalQuery, { nil: null }))
  .map(([path, query]) => new Probe(query === null ? path : `${path}?${query}`));

/** Any request target: canonical, hostile, or an arbitrary string after "/". */
export const anyTarget: fc.Arbitrary<Probe> = fc.oneof(
  { weight: 2, arbitrary: canonicalTarget },
  { weight: 4, arbitrary: hostileTarget },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 40 }).map((rest) => new Probe(`/${rest}`)) },
);

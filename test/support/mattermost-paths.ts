// Request-target handling of the Mattermost server's router: Go's net/http decodes the
// path (URL.Path), then gorilla/mux responds with 301 to the cleaned path when cleaning
// changes it. The stand-in server uses this module to decide between routing and redirecting.
//
// Strings that contain decoded paths are "binary" strings: one character per byte (latin1),
// because a percent-escape may decode to any byte, not only to valid UTF-8.

/** Result of checking one request target. */
export type TargetCheck =
  | {
      readonly kind: "route";
      /** Decoded path (Go's URL.Path) that the routes match against. */
      readonly path: string;
      /** Raw query without the "?", or null when the target has no "?". */
      readonly query: string | null;
    }
  | {
      readonly kind: "redirect";
      /** Value for the `Location` header: the cleaned path, escaped, plus the original query. */
      readonly location: string;
    }
  | {
      readonly kind: "invalid";
      /** Why the target cannot be parsed, for the 400 response body. */
      readonly reason: string;
    };

const ABSOLUTE_FORM = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/;

/**
 * Checks a raw request target the way Mattermost's router does. The target is routed
 * only if it is already clean. It is redirected when cleaning changes the decoded path,
 * when the raw path contains %2F or %00, or when the target contains a raw "#".
 * "\" and ";" are ordinary path characters.
 */
export function checkRequestTarget(target: string): TargetCheck {
  let rest = target;
  const absolute = ABSOLUTE_FORM.exec(rest);
  if (absolute !== null) {
    rest = rest.slice(absolute[0].length);
    if (rest === "" || rest.startsWith("?")) rest = `/${rest}`;
  }
  if (!rest.startsWith("/")) {
    return { kind: "invalid", reason: `invalid request target ${JSON.stringify(target)}` };
  }

  // A raw "#" makes the target unclean, and everything from it on is dropped.
  const hash = rest.indexOf("#");
  const hasFragment = hash !== -1;
  if (hasFragment) rest = rest.slice(0, hash);

  const questionMark = rest.indexOf("?");
  const rawPath = questionMark === -1 ? rest : rest.slice(0, questionMark);
  const query = questionMark === -1 ? null : rest.slice(questionMark + 1);

  const decoded = percentDecode(rawPath);
  if (decoded === null) {
    return { kind: "invalid", reason: `invalid percent-escape in path ${JSON.stringify(rawPath)}` };
  }

  const cleaned = cleanPath(decoded);
  const hasEncodedSlash = /%2f/i.test(rawPath);
  const hasEncodedNul = rawPath.includes("%00");
  if (cleaned === decoded && !hasEncodedSlash && !hasEncodedNul && !hasFragment) {
    return { kind: "route", path: decoded, query };
  }

  // NUL bytes are dropped from the Location so that following it cannot loop back here.
  const location = escapePath(cleaned.replaceAll("\0", ""));
  return { kind: "redirect", location: query === null ? location : `${location}?${query}` };
}

/**
 * Decodes every %XX escape into its byte and returns a binary string, or null when a
 * "%" is not followed by two hex digits (Go rejects such a request with 400).
 */
export function percentDecode(raw: string): string | null {
  if (!raw.includes("%")) return raw;
  let out = "";
  for (let index = 0; index < raw.length; index++) {
    const char = raw[index];
    if (char !== "%") {
      out += char;
      continue;
    }
    const hex = raw.slice(index + 1, index + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null;
    out += String.fromCharCode(Number.parseInt(hex, 16));
    index += 2;
  }
  return out;
}

/**
 * Cleans a path like gorilla/mux's cleanPath: Go's path.Clean (merge repeated slashes,
 * drop "." segments, resolve ".." segments, never climb above the root), then restore
 * a trailing slash that path.Clean removed.
 */
export function cleanPath(path: string): string {
  if (path === "") return "/";
  const rooted = path.startsWith("/") ? path : `/${path}`;
  const segments: string[] = [];
  for (const segment of rooted.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") {
      segments.pop();
      continue;
    }
    segments.push(segment);
  }
  const cleaned = `/${segments.join("/")}`;
  if (rooted.endsWith("/") && cleaned !== "/") return `${cleaned}/`;
  return cleaned;
}

// Characters that Go's net/url leaves unescaped in a whole path (shouldEscape in its
// encodePath mode): letters, digits, "-_.~" and "$&+,/:;=@".
const PATH_SAFE = /[A-Za-z0-9\-_.~$&+,/:;=@]/;

/** Escapes a binary-string path the way Go's URL.EscapedPath does for a changed path. */
export function escapePath(path: string): string {
  let out = "";
  for (const char of path) {
    if (PATH_SAFE.test(char)) {
      out += char;
      continue;
    }
    const code = char.charCodeAt(0);
    out += `%${code.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

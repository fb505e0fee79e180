// The whitelist: request paths that may reach Mattermost without the pre-authentication
// secret. The rules come from Mattermost's pre-authentication documentation; start-up
// compiles the enabled ones into one regular expression, and a request only runs it.

/** Optional whitelist groups for single sign-on flows that cannot carry the secret. */
export type SsoGroup = "saml" | "openid" | "oauth";

export const SSO_GROUPS: readonly SsoGroup[] = ["saml", "openid", "oauth"];

/** One documented whitelist rule, in the nginx spelling that administrators know. */
export interface WhitelistRule {
  /** Stable name used in logs, metrics and `explain` output. */
  readonly name: string;
  /** "always" for the base set, otherwise the SSO group that enables it. */
  readonly group: "always" | SsoGroup;
  /** The rule as an nginx `location`, for documentation and start-up logs. */
  readonly nginx: string;
  /** Regular-expression source for the path, without anchors. */
  readonly pattern: string;
}

/** Settings that decide which rules are active. */
export interface WhitelistOptions {
  readonly groups: readonly SsoGroup[];
  /** Service names allowed in `{service}`; empty means any `[A-Za-z0-9]+`. */
  readonly ssoServices: readonly string[];
}

/** A compiled whitelist: `match` returns the rule that lets a path through, or null. */
export interface Whitelist {
  readonly rules: readonly WhitelistRule[];
  match(path: string): WhitelistRule | null;
}

// A path segment in canonical form: one or more characters that Mattermost's router,
// Go's net/http and nginx all read the same way, and never "." or "..". The set is the
// RFC 3986 unreserved characters plus the sub-delimiters that carry no routing meaning.
// "%" is left out, so no percent-escape (%2e, %2f, %5c, %00, ...) can hide a dot
// segment or a separator, and ";" is left out because some servers treat it as a
// parameter delimiter. "\" and "#" are left out as well.
const SEGMENT_CHARS = "[A-Za-z0-9\\-._~!$&'()*+,=:@]";
const SEGMENT = `(?!\\.\\.?(?:/|$))${SEGMENT_CHARS}+`;
const SERVICE_ANY = "[A-Za-z0-9]+";

export const SERVICE_NAME = /^[A-Za-z0-9]+$/;

function serviceSource(services: readonly string[]): string {
  if (services.length === 0) return SERVICE_ANY;
  return `(?:${services.join("|")})`;
}

function serviceNginx(services: readonly string[]): string {
  return services.length === 0 ? SERVICE_ANY : `(${services.join("|")})`;
}

/** Lists the documented rules enabled by `options`, in the order they are matched. */
export function whitelistRules(options: WhitelistOptions): WhitelistRule[] {
  const service = serviceSource(options.ssoServices);
  const serviceInNginx = serviceNginx(options.ssoServices);
  const rules: WhitelistRule[] = [
    {
      name: "notifications-ack",
      group: "always",
      nginx: "location = /api/v4/notifications/ack",
      pattern: "/api/v4/notifications/ack",
    },
    {
      name: "config-client",
      group: "always",
      nginx: "location = /api/v4/config/client",
      pattern: "/api/v4/config/client",
    },
    {
      name: "login-desktop",
      group: "always",
      nginx: "location = /login/desktop",
      pattern: "/login/desktop",
    },
    {
      name: "static",
      group: "always",
      nginx: "location ^~ /static/",
      // "/static/" itself, and any canonical path below it, with or without a trailing slash.
      pattern: `/static/(?:${SEGMENT}/)*(?:${SEGMENT})?`,
    },
  ];
  if (options.groups.includes("saml")) {
    rules.push({
      name: "saml-login",
      group: "saml",
      nginx: "location = /login/sso/saml",
      pattern: "/login/sso/saml",
    });
  }
  if (options.groups.includes("openid")) {
    rules.push({
      name: "openid",
      group: "openid",
      nginx: `location ~ ^/oauth/${serviceInNginx}/(complete|login|mobile_login|signup)$`,
      pattern: `/oauth/${service}/(?:complete|login|mobile_login|signup)`,
    });
  }
  if (options.groups.includes("oauth")) {
    rules.push(
      {
        name: "oauth-api-v3-complete",
        group: "oauth",
        nginx: `location ~ ^/api/v3/oauth/${serviceInNginx}/complete$`,
        pattern: `/api/v3/oauth/${service}/complete`,
      },
      {
        name: "oauth-signup-login-complete",
        group: "oauth",
        nginx: `location ~ ^/(signup|login)/${serviceInNginx}/complete$`,
        pattern: `/(?:signup|login)/${service}/complete`,
      },
    );
  }
  return rules;
}

/**
 * Compiles the enabled rules into one anchored regular expression with a capture group
 * per rule. A path that is not in canonical form matches no rule, so it always needs
 * the secret.
 */
export function compileWhitelist(options: WhitelistOptions): Whitelist {
  const rules = whitelistRules(options);
  const source = rules.map((rule) => `(${rule.pattern})`).join("|");
  const matcher = new RegExp(`^(?:${source})$`);
  return Object.freeze({
    rules: Object.freeze(rules),
    match(path: string): WhitelistRule | null {
      const found = matcher.exec(path);
      if (found === null) return null;
      for (let index = 1; index < found.length; index++) {
        if (found[index] !== undefined) return rules[index - 1] ?? null;
      }
      return null;
    },
  });
}

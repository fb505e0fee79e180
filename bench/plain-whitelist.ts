// The documented whitelist written as a plain loop, the way an nginx configuration reads:
// exact locations, then the /static/ prefix, then the regex locations in order. It is the
// baseline for the compiled matcher in bench/micro.ts. Unlike the gate, it does not insist
// on canonical paths, so it does a little less work per path.

interface PlainRule {
  readonly name: string;
  readonly exact?: string;
  readonly prefix?: string;
  readonly regex?: RegExp;
}

/** Every documented rule, with all single sign-on groups enabled and any service name. */
const RULES: readonly PlainRule[] = [
  { name: "notifications-ack", exact: "/api/v4/notifications/ack" },
  { name: "config-client", exact: "/api/v4/config/client" },
  { name: "login-desktop", exact: "/login/desktop" },
  { name: "saml-login", exact: "/login/sso/saml" },
  { name: "static", prefix: "/static/" },
  { name: "openid", regex: /^\/oauth\/[A-Za-z0-9]+\/(complete|login|mobile_login|signup)$/ },
  { name: "oauth-api-v3-complete", regex: /^\/api\/v3\/oauth\/[A-Za-z0-9]+\/complete$/ },
  { name: "oauth-signup-login-complete", regex: /^\/(signup|login)\/[A-Za-z0-9]+\/complete$/ },
];

/** Returns the name of the first rule that lets `path` through, or null. */
export function plainWhitelistMatch(path: string): string | null {
  for (const rule of RULES) {
    if (rule.exact !== undefined && path === rule.exact) return rule.name;
    if (rule.prefix !== undefined && path.startsWith(rule.prefix)) return rule.name;
    if (rule.regex !== undefined && rule.regex.test(path)) return rule.name;
  }
  return null;
}

// The request targets that the micro-benchmarks feed to the matcher and the gate. The mix
// imitates the traffic of Mattermost's desktop and mobile apps: mostly API calls that need
// the secret, a good share of /static/ assets, and a few configuration and single sign-on
// calls. It is an estimate, not a recorded trace. A weight is the number of times a target repeats.
import { parseRequestTarget } from "../src/target.ts";

const ID = "k3m9qz7xw1fbtrp8ds5yhn4cja"; // Mattermost ids are 26 lower-case letters and digits.
const TEAM = "ab1cd2ef3gh4ij5kl6mn7op8qr";

/** One request target of the mix, with how many times it appears. */
export interface MixEntry {
  readonly kind: "api" | "static" | "config" | "sso" | "long";
  readonly target: string;
  readonly weight: number;
}

export const PATH_MIX: readonly MixEntry[] = [
  { kind: "api", target: "/api/v4/users/me", weight: 4 },
  { kind: "api", target: `/api/v4/channels/${ID}/posts?page=0&per_page=60&skipFetchThreads=false`, weight: 4 },
  { kind: "api", target: `/api/v4/users/me/teams/${TEAM}/channels/members`, weight: 2 },
  { kind: "api", target: "/api/v4/users/status/ids", weight: 2 },
  { kind: "api", target: `/api/v4/posts/${ID}/thread?skipFetchThreads=false&collapsedThreads=true`, weight: 2 },
  { kind: "api", target: `/api/v4/files/${ID}/thumbnail`, weight: 2 },
  { kind: "api", target: "/api/v4/system/ping?get_server_status=true&device_id=abc", weight: 1 },
  { kind: "api", target: "/api/v4/license/client?format=old", weight: 1 },
  { kind: "api", target: "/api/v4/websocket?connection_id=&sequence_number=0", weight: 1 },
  { kind: "api", target: "/api/v4/notifications/ack", weight: 1 },
  { kind: "static", target: "/static/main.2b5e1b3e7c4a9f0d1e2c.js", weight: 3 },
  { kind: "static", target: "/static/files/7d1c0f2a9b8e.woff2", weight: 1 },
  { kind: "static", target: "/static/images/favicon/favicon-default-16x16.png", weight: 1 },
  { kind: "static", target: "/static/plugins/com.mattermost.calls/static/main.js?v=1.2.3", weight: 1 },
  { kind: "config", target: "/api/v4/config/client?format=old", weight: 2 },
  { kind: "config", target: "/login/desktop?server_url=https%3A%2F%2Fchat.example.com", weight: 1 },
  { kind: "sso", target: "/oauth/gitlab/complete?code=4f1d2c3b&state=eyJhY3Rpb24iOiJtb2JpbGUifQ", weight: 1 },
  { kind: "sso", target: "/login/sso/saml?action=mobile&redirect_to=mmauth%3A%2F%2F", weight: 1 },
  { kind: "sso", target: "/signup/google/complete?code=abc&state=def", weight: 1 },
  { kind: "sso", target: "/api/v3/oauth/office365/complete?code=xyz", weight: 1 },
  { kind: "long", target: `/static/${"plugins/com.example.very-long-plugin-name/".repeat(12)}bundle.js`, weight: 1 },
  { kind: "long", target: `/api/v4/${`channels/${ID}/`.repeat(20)}posts?${"a=1&".repeat(100)}b=2`, weight: 1 },
];

/**
 * Returns the paths of the mix, weights expanded, with the query split off by the gate's
 * own parser. The order is shuffled with a fixed seed, so branch predictors do not see a
 * pattern that real traffic would not have.
 */
export function mixPaths(): string[] {
  const paths: string[] = [];
  for (const entry of PATH_MIX) {
    const parsed = parseRequestTarget(entry.target);
    if (!parsed.ok) throw new Error(`path mix: ${entry.target} is not a valid request target`);
    for (let copy = 0; copy < entry.weight; copy++) paths.push(parsed.target.path);
  }
  let seed = 12345;
  for (let index = paths.length - 1; index > 0; index--) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    const other = seed % (index + 1);
    [paths[index], paths[other]] = [paths[other]!, paths[index]!];
  }
  return paths;
}

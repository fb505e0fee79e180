// The nginx configuration the benchmark compares the gate with: the server block from
// Mattermost's pre-authentication documentation (whitelist locations, then the secret
// check in `location /`), with the proxy settings an administrator would use in
// production: one worker per core, keep-alive connections to Mattermost, HTTP/1.1 with
// WebSocket upgrades, no body size limit and no access log.
import { enabledLocations, type ModelOptions } from "../../test/support/reference-model.ts";
import { tempPathDirectives } from "../../test/support/nginx.ts";

export interface NginxBenchSite {
  readonly directory: string;
  readonly port: number;
  readonly upstreamPort: number;
  readonly secret: string;
  readonly whitelist: ModelOptions;
}

/** Quotes a secret for nginx; base64 secrets never contain the characters nginx would expand. */
function quoted(value: string): string {
  if (/["$\\\s;{}]/.test(value)) throw new Error("the benchmark secret must not contain quotes, $, \\, spaces, ; or braces");
  return `"${value}"`;
}

export function renderNginxConfig(site: NginxBenchSite): string {
  const locations = enabledLocations(site.whitelist).map(
    (location) => `    location ${location.modifier} ${location.uri} {\n      proxy_pass http://mattermost;\n    }`,
  );
  const dir = site.directory;
  return `worker_processes auto;
worker_rlimit_nofile 16384;
pid ${dir}/nginx.pid;
error_log stderr warn;

events {
  # Each proxied connection needs two: one from the client, one to Mattermost.
  worker_connections 8192;
}

http {
${tempPathDirectives(dir)}

  # Keep-alive to Mattermost for plain requests, "upgrade" for WebSocket handshakes.
  map $http_upgrade $connection_upgrade {
    default upgrade;
    ''      '';
  }
  upstream mattermost {
    server 127.0.0.1:${site.upstreamPort};
    keepalive 64;
  }

  server {
    listen 127.0.0.1:${site.port};
    client_max_body_size 0;
    set $expected_secret ${quoted(site.secret)};

    proxy_http_version 1.1;
    proxy_set_header Host $http_host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_read_timeout 600s;

${locations.join("\n\n")}

    location / {
      if ($http_x_mattermost_preauth_secret != $expected_secret) {
        add_header X-Reject-Reason pre-auth always;
        add_header Cache-Control "no-store" always;
        return 403 "Forbidden: Invalid pre-authentication secret";
      }
      proxy_pass http://mattermost;
    }
  }
}
`;
}

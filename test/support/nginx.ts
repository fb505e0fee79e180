// Runs nginx with the configuration from Mattermost's pre-authentication documentation,
// as a foreground process of the test, in front of a stand-in Mattermost. nginx comes
// from Debian's packages when it is not installed yet.
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { TEST_SECRET } from "./gate-process.ts";
import { enabledLocations, type ModelOptions } from "./reference-model.ts";
import { captureOutput } from "./child-output.ts";

const SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

async function run(command: string[]): Promise<{ exitCode: number; output: string }> {
  const child = Bun.spawn(command, {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, PATH: SBIN_PATH, DEBIAN_FRONTEND: "noninteractive" },
  });
  const [stdout, stderr, exitCode] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { exitCode, output: `${stdout}${stderr}` };
}

function findNginx(): string | null {
  return Bun.which("nginx", { PATH: `${process.env.PATH ?? ""}:${SBIN_PATH}` });
}

/**
 * Returns the path of the nginx executable, installing Debian's nginx-light (or nginx)
 * with apt-get when none is found. Throws with apt-get's last lines when that fails.
 */
export async function ensureNginx(): Promise<string> {
  const found = findNginx();
  if (found !== null) return found;

  const update = await run(["apt-get", "update", "-qq"]);
  if (update.exitCode !== 0) {
    throw new Error(`nginx is not installed and "apt-get update" failed (exit ${update.exitCode}):\n${update.output.slice(-2000)}`);
  }
  let install = await run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"]);
  if (install.exitCode !== 0) install = await run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"]);
  const installed = findNginx();
  if (install.exitCode !== 0 || installed === null) {
    throw new Error(`nginx is not installed and apt-get could not install it (exit ${install.exitCode}):\n${install.output.slice(-2000)}`);
  }
  return installed;
}

/** One nginx `server` block: where it listens, which whitelist it has, where it forwards. */
export interface NginxSite {
  readonly port: number;
  readonly options: ModelOptions;
  readonly upstreamPort: number;
}

function proxyTo(upstreamPort: number): string {
  return `proxy_pass http://127.0.0.1:${upstreamPort};\n      proxy_http_version 1.1;`;
}

/** Renders the documented server block with the whitelist locations that `site.options` enables. */
export function serverBlock(site: NginxSite): string {
  const locations = enabledLocations(site.options).map(
    (location) => `    location ${location.modifier} ${location.uri} {\n      ${proxyTo(site.upstreamPort)}\n    }`,
  );
  return `  server {
    listen 127.0.0.1:${site.port};
    set $expected_secret "${TEST_SECRET}";

${locations.join("\n\n")}

    location / {
      if ($http_x_mattermost_preauth_secret != $expected_secret) {
        add_header X-Reject-Reason pre-auth always;
        add_header Cache-Control "no-store" always;
        return 403 "Forbidden: Invalid pre-authentication secret";
      }
      ${proxyTo(site.upstreamPort)}
    }
  }`;
}

/** Renders the directives that keep nginx's temporary files in `dir`, for an unprivileged run. */
export function tempPathDirectives(dir: string): string {
  return `  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;`;
}

function nginxConfig(dir: string, sites: readonly NginxSite[]): string {
  return `worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr warn;

events {
  worker_connections 256;
}

http {
${tempPathDirectives(dir)}

${sites.map(serverBlock).join("\n\n")}
}
`;
}

export interface NginxProcess {
  readonly process: Subprocess<"ignore", "pipe", "pipe">;
  readonly config: string;
  /** Everything nginx wrote to stderr so far. */
  output(): string;
  stop(): Promise<void>;
}

export function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Starts nginx in the foreground with one server block per site and waits for every port. */
export async function startNginx(sites: readonly NginxSite[]): Promise<NginxProcess> {
  const binary = await ensureNginx();
  const dir = mkdtempSync(join(tmpdir(), "preauth-gate-nginx-"));
  // nginx's worker processes run as an unprivileged user and must reach the temp paths.
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, "logs"));
  const config = nginxConfig(dir, sites);
  writeFileSync(join(dir, "nginx.conf"), config);

  const child = Bun.spawn([binary, "-p", dir, "-c", join(dir, "nginx.conf"), "-e", "stderr", "-g", "daemon off;"], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const output = captureOutput(child);
  const collectors = output.finished;

  const deadline = Date.now() + 10_000;
  for (const site of sites) {
    while (!(await acceptsConnections(site.port))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill();
        await Promise.race([collectors, Bun.sleep(200)]);
        throw new Error(`nginx did not start (exit ${child.exitCode}):\n${output.text()}\nconfiguration:\n${config}`);
      }
      await Bun.sleep(20);
    }
  }
  return {
    process: child,
    config,
    output: output.text,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await child.exited;
      await Promise.race([collectors, Bun.sleep(500)]);
    },
  };
}

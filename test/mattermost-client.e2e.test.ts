// Drives the compiled gate with Mattermost's official JavaScript client.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Client4, ClientError } from "@mattermost/client";
import { startStandInMattermost, type StandInMattermost } from "./support/stand-in-mattermost.ts";
import { SECRET_HEADER, TEST_SECRET, startGateProcess, type GateProcess } from "./support/gate-process.ts";

let mattermost: StandInMattermost;
let gate: GateProcess;

beforeAll(async () => {
  mattermost = await startStandInMattermost({ quiet: true });
  gate = await startGateProcess({ upstream: mattermost.url });
});
afterAll(async () => {
  await gate?.stop();
  await mattermost?.close();
});

function newClient(): Client4 {
  const client = new Client4();
  client.setUrl(gate.url);
  return client;
}

test("ping without the secret sees the pre-auth rejection", async () => {
  const client = newClient();
  const { response, headers } = await client.doFetchWithResponse(`${client.getBaseRoute()}/system/ping`, {
    method: "get",
    ignoreStatus: true,
  });
  expect(response.status).toBe(403);
  // The client capitalises header names in the map it returns.
  expect(headers.get("X-Reject-Reason")).toBe("pre-auth");
  expect(response.headers.get("x-reject-reason")).toBe("pre-auth");
  await expect(client.ping()).rejects.toBeInstanceOf(ClientError);
  expect(mattermost.received.filter((request) => request.route !== null)).toHaveLength(0);
});

test("client with the secret as a default header gets through", async () => {
  const client = newClient();
  client.setHeader(SECRET_HEADER, TEST_SECRET);
  const ping = await client.ping();
  expect(JSON.stringify(ping)).toContain("OK");
  const config = await client.getClientConfig();
  expect(config).toBeTruthy();
  const me = await client.getMe();
  expect(me).toBeTruthy();
  const routes = mattermost.received.map((request) => request.path);
  expect(routes).toContain("/api/v4/system/ping");
  expect(routes).toContain("/api/v4/config/client");
  expect(routes).toContain("/api/v4/users/me");
  for (const request of mattermost.received) expect(request.headers["x-mattermost-preauth-secret"]).toBeUndefined();
});

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

/** Runs `work` while recording every response that the client's fetch() receives. */
async function recordResponses(work: () => Promise<unknown>): Promise<Response[]> {
  const responses: Response[] = [];
  const realFetch = globalThis.fetch;
  const recordingFetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const response: Response = await realFetch(input, init);
    responses.push(response.clone() as unknown as Response);
    return response;
  };
  globalThis.fetch = recordingFetch as typeof fetch;
  try {
    await work();
  } finally {
    globalThis.fetch = realFetch;
  }
  return responses;
}

test("ping without the secret sees the pre-auth rejection", async () => {
  const client = newClient();
  let failure: unknown = null;
  const responses = await recordResponses(() => client.ping(false).catch((error) => (failure = error)));
  expect(failure).toBeInstanceOf(ClientError);
  expect(responses).toHaveLength(1);
  expect(responses[0]!.status).toBe(403);
  expect(responses[0]!.headers.get("x-reject-reason")).toBe("pre-auth");
  expect(mattermost.received).toHaveLength(0);
});

test("client with the secret as a default header gets through", async () => {
  const client = newClient();
  client.setHeader(SECRET_HEADER, TEST_SECRET);
  const ping = await client.ping(false);
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

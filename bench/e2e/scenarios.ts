// The end-to-end scenarios, as data. Each is measured against every target it lists,
// with a fixed number of connections.
import type { TargetName } from "./targets.ts";

export const SECRET_HEADER = "X-Mattermost-Preauth-Secret";

/** A file id of Mattermost's shape; the stand-in serves any id. */
const FILE_ID = "k3m9qz7xw1fbtrp8ds5yhn4cja";
export const UPLOAD_BYTES = 5 * 1024 * 1024;
export const DOWNLOAD_BYTES = 50 * 1024 * 1024;
export const STATIC_BYTES = 50 * 1024;

export interface HttpScenario {
  readonly kind: "http";
  readonly id: string;
  readonly title: string;
  readonly method: "GET" | "POST";
  readonly path: string;
  readonly withSecret: boolean;
  readonly bodyBytes: number;
  /** "success" expects 2xx from every target; "rejected" expects the gate's or nginx's 403. */
  readonly expected: "success" | "rejected";
  /** Bytes of the response body, checked once before measuring; null skips the check. */
  readonly responseBytes: number | null;
  readonly connections: number;
  readonly targets: readonly TargetName[];
  /** Set when autocannon itself is slower than every target, so only wrk can measure. */
  readonly wrkOnly: boolean;
}

export interface WebSocketScenario {
  readonly kind: "websocket";
  readonly id: string;
  readonly title: string;
  readonly path: string;
  readonly connections: number;
  readonly messageBytes: number;
  readonly targets: readonly TargetName[];
}

export type Scenario = HttpScenario | WebSocketScenario;

const ALL: readonly TargetName[] = ["direct", "nginx", "gate"];

export const SCENARIOS: readonly Scenario[] = [
  {
    kind: "http",
    id: "protected-call",
    title: "API call with the right secret (GET /api/v4/users/me)",
    method: "GET",
    path: "/api/v4/users/me",
    withSecret: true,
    bodyBytes: 0,
    expected: "success",
    responseBytes: null,
    connections: 50,
    targets: ALL,
    wrkOnly: false,
  },
  {
    kind: "http",
    id: "rejection",
    title: "Rejection, no secret (GET /api/v4/users/me)",
    method: "GET",
    path: "/api/v4/users/me",
    withSecret: false,
    bodyBytes: 0,
    expected: "rejected",
    responseBytes: null,
    connections: 50,
    // The stand-in does not check the secret, so it has nothing to reject.
    targets: ["nginx", "gate"],
    wrkOnly: false,
  },
  {
    kind: "http",
    id: "whitelisted-config",
    title: "Whitelisted, no secret (GET /api/v4/config/client, about 2 KB)",
    method: "GET",
    path: "/api/v4/config/client",
    withSecret: false,
    bodyBytes: 0,
    expected: "success",
    responseBytes: null,
    connections: 50,
    targets: ALL,
    wrkOnly: false,
  },
  {
    kind: "http",
    id: "static-50k",
    title: "Static file, 50 KiB (GET /static/bench-50k.js, no gzip)",
    method: "GET",
    path: "/static/bench-50k.js",
    withSecret: false,
    bodyBytes: 0,
    expected: "success",
    responseBytes: STATIC_BYTES,
    connections: 50,
    targets: ALL,
    wrkOnly: false,
  },
  {
    kind: "http",
    id: "upload-5m",
    title: "Upload, 5 MiB (POST /api/v4/files)",
    method: "POST",
    path: "/api/v4/files",
    withSecret: true,
    bodyBytes: UPLOAD_BYTES,
    expected: "success",
    responseBytes: null,
    connections: 8,
    targets: ALL,
    wrkOnly: false,
  },
  {
    kind: "http",
    id: "download-50m",
    title: "Download, 50 MiB (GET /api/v4/files/{id})",
    method: "GET",
    path: `/api/v4/files/${FILE_ID}?size=${DOWNLOAD_BYTES}`,
    withSecret: true,
    bodyBytes: 0,
    expected: "success",
    responseBytes: DOWNLOAD_BYTES,
    connections: 4,
    targets: ALL,
    // autocannon parses response bodies in JavaScript and tops out near 120 MB/s on the
    // benchmark machine, while every target delivers 0.5 to 2 GB/s to wrk.
    wrkOnly: true,
  },
  {
    kind: "websocket",
    id: "websocket-1000",
    title: "WebSocket echo round trips, 1,000 connections, 200-byte messages",
    path: "/api/v4/websocket",
    connections: 1000,
    messageBytes: 200,
    targets: ALL,
  },
];

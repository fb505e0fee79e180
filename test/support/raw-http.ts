// A minimal HTTP/1.1 client over node:net that writes request lines exactly as given, so
// tests can send targets that fetch() and other clients would refuse or rewrite. It keeps
// connections alive, sends one request at a time per connection, and reconnects when the
// server closes.
import { connect, type Socket } from "node:net";

export interface RawResponse {
  /** null when the server closed the connection or timed out without a response. */
  readonly status: number | null;
  /** Header names in lower case, with repeated headers joined by ", ". */
  readonly headers: ReadonlyMap<string, string>;
  readonly body: string;
}

const NO_RESPONSE: RawResponse = { status: null, headers: new Map(), body: "" };

/** Builds a GET request head for `target`, which goes on the wire as UTF-8 unless it is a Buffer. */
export function getRequest(target: string | Buffer, host: string, extraHeaders = ""): Buffer {
  const line = Buffer.isBuffer(target) ? target : Buffer.from(target, "utf8");
  return Buffer.concat([Buffer.from("GET "), line, Buffer.from(` HTTP/1.1\r\nHost: ${host}\r\n${extraHeaders}\r\n`)]);
}

/** Parses one response from the start of `data`, or returns null while it is incomplete. */
function parseResponse(data: Buffer, closed: boolean): { response: RawResponse; rest: Buffer } | null {
  const headEnd = data.indexOf("\r\n\r\n");
  if (headEnd < 0) return null;
  const lines = data.subarray(0, headEnd).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "")?.[1] ?? Number.NaN);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  const bodyStart = headEnd + 4;

  const length = headers.get("content-length");
  if (length !== undefined || status === 204 || status === 304) {
    const end = bodyStart + Number(length ?? 0);
    if (data.length < end) return null;
    return { response: { status, headers, body: data.subarray(bodyStart, end).toString("latin1") }, rest: data.subarray(end) };
  }
  if (headers.get("transfer-encoding")?.toLowerCase() === "chunked") {
    const chunks: Buffer[] = [];
    let offset = bodyStart;
    for (;;) {
      const lineEnd = data.indexOf("\r\n", offset);
      if (lineEnd < 0) return null;
      const size = Number.parseInt(data.subarray(offset, lineEnd).toString("latin1"), 16);
      if (size === 0) {
        const end = data.indexOf("\r\n\r\n", lineEnd) + 4;
        if (end < 4) return null;
        return { response: { status, headers, body: Buffer.concat(chunks).toString("latin1") }, rest: data.subarray(end) };
      }
      if (data.length < lineEnd + 2 + size + 2) return null;
      chunks.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
      offset = lineEnd + 2 + size + 2;
    }
  }
  // No length and no chunking: the body runs until the server closes.
  if (!closed) return null;
  return { response: { status, headers, body: data.subarray(bodyStart).toString("latin1") }, rest: Buffer.alloc(0) };
}

/** One keep-alive connection that reconnects after the server closes it. */
export class RawHttpConnection {
  private socket: Socket | null = null;

  constructor(
    readonly port: number,
    readonly timeoutMs = 5_000,
  ) {}

  /**
   * Sends `head` and resolves with the response; a connection error or timeout gives status
   * null. A reused connection that the server closed while idle is retried once, fresh.
   */
  async send(head: Buffer): Promise<RawResponse> {
    const reused = this.socket !== null && !this.socket.destroyed;
    const first = await this.sendOnce(await this.connected(), head);
    if (first.response.status !== null || !reused || first.receivedAny) return first.response;
    return (await this.sendOnce(await this.connected(), head)).response;
  }

  private sendOnce(socket: Socket, head: Buffer): Promise<{ response: RawResponse; receivedAny: boolean }> {
    return new Promise((resolve) => {
      let data = Buffer.alloc(0);
      let closed = false;
      const finish = (response: RawResponse, keepOpen: boolean) => {
        clearTimeout(timer);
        socket.off("data", onData);
        socket.off("close", onClose);
        socket.off("error", onClose);
        if (!keepOpen) this.drop();
        resolve({ response, receivedAny: data.length > 0 });
      };
      const tryParse = () => {
        const parsed = parseResponse(data, closed);
        if (parsed !== null) {
          const keepOpen = !closed && parsed.response.headers.get("connection")?.toLowerCase() !== "close";
          finish(parsed.response, keepOpen);
        } else if (closed) {
          finish(NO_RESPONSE, false);
        }
      };
      const onData = (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        tryParse();
      };
      const onClose = () => {
        closed = true;
        tryParse();
      };
      const timer = setTimeout(() => finish(NO_RESPONSE, false), this.timeoutMs);
      socket.on("data", onData);
      socket.on("close", onClose);
      socket.on("error", onClose);
      socket.write(head);
    });
  }

  close(): void {
    this.drop();
  }

  private drop(): void {
    this.socket?.destroy();
    this.socket = null;
  }

  private connected(): Promise<Socket> {
    if (this.socket !== null && !this.socket.destroyed) return Promise.resolve(this.socket);
    return new Promise((resolve, reject) => {
      const socket = connect(this.port, "127.0.0.1");
      socket.once("connect", () => {
        socket.off("error", reject);
        // send() notices a closed socket, so this listener only keeps an idle close from throwing.
        socket.on("error", () => {});
        this.socket = socket;
        resolve(socket);
      });
      socket.once("error", reject);
    });
  }
}

/** Sends every request over `size` keep-alive connections and returns the responses in order. */
export async function sendAll(port: number, heads: readonly Buffer[], size = 4): Promise<RawResponse[]> {
  const responses: RawResponse[] = new Array(heads.length);
  let next = 0;
  const worker = async () => {
    const connection = new RawHttpConnection(port);
    while (next < heads.length) {
      const index = next++;
      responses[index] = await connection.send(heads[index]!);
    }
    connection.close();
  };
  await Promise.all(Array.from({ length: size }, worker));
  return responses;
}

// A minimal RFC 6455 WebSocket server that echoes messages, for the stand-in Mattermost
// server. It checks the opening handshake like gorilla/websocket's Upgrader, which the
// Mattermost server's connectWebSocket uses. It never negotiates an extension such as
// permessage-deflate, and it reassembles fragmented messages.

import { createHash } from "node:crypto";
import type { Duplex } from "node:stream";

const HANDSHAKE_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Largest message the server accepts. A larger message closes the connection with 1009. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** How long a server-initiated close waits for the client's close frame. */
const CLOSE_TIMEOUT_MS = 2000;

const OPCODE_CONTINUATION = 0x0;
const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;
const OPCODE_CLOSE = 0x8;
const OPCODE_PING = 0x9;
const OPCODE_PONG = 0xa;

const CLOSE_PROTOCOL_ERROR = 1002;
const CLOSE_INVALID_PAYLOAD = 1007;
const CLOSE_MESSAGE_TOO_BIG = 1009;

/** Outcome of checking an upgrade request: the 101 details, or the error response. */
export type UpgradeDecision =
  | { readonly ok: true; readonly accept: string; readonly protocol: string | null }
  | { readonly ok: false; readonly status: number; readonly reason: string };

/** Splits comma-separated header values into lower-case tokens. */
function headerTokens(values: readonly string[] | undefined): string[] {
  if (values === undefined) return [];
  return values
    .flatMap((value) => value.split(","))
    .map((token) => token.trim().toLowerCase())
    .filter((token) => token !== "");
}

/** Returns the host and port of an Origin value the way Go's url.Parse sets URL.Host. */
function originHost(origin: string): string {
  const match = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(origin);
  if (match === null) return "";
  const authority = match[1] ?? "";
  return authority.slice(authority.lastIndexOf("@") + 1);
}

/**
 * Checks an upgrade request in the order gorilla/websocket's Upgrader does: Connection
 * and Upgrade tokens, method, version, Origin, then Sec-WebSocket-Key. A request without
 * an Origin header passes the Origin check. Otherwise the Origin's host and port must
 * equal the Host header, compared without regard to ASCII case.
 * `headers` maps lower-case names to every value received.
 */
export function checkUpgradeRequest(
  method: string,
  headers: Readonly<Record<string, readonly string[]>>,
): UpgradeDecision {
  if (!headerTokens(headers["connection"]).includes("upgrade")) {
    return { ok: false, status: 400, reason: "'upgrade' token not found in 'Connection' header" };
  }
  if (!headerTokens(headers["upgrade"]).includes("websocket")) {
    return { ok: false, status: 400, reason: "'websocket' token not found in 'Upgrade' header" };
  }
  if (method !== "GET") {
    return { ok: false, status: 405, reason: "request method is not GET" };
  }
  if (!headerTokens(headers["sec-websocket-version"]).includes("13")) {
    return { ok: false, status: 400, reason: "unsupported version: 13 not found in 'Sec-Websocket-Version' header" };
  }
  const origin = headers["origin"]?.[0];
  const host = headers["host"]?.[0] ?? "";
  if (origin !== undefined && originHost(origin).toLowerCase() !== host.toLowerCase()) {
    return { ok: false, status: 403, reason: `origin ${JSON.stringify(origin)} does not match host ${JSON.stringify(host)}` };
  }
  const key = headers["sec-websocket-key"]?.[0]?.trim() ?? "";
  if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) {
    return { ok: false, status: 400, reason: "'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length" };
  }
  const accept = createHash("sha1").update(key + HANDSHAKE_GUID).digest("base64");
  // Protocol names are case-sensitive, so the first offered name is returned as sent.
  const offered = (headers["sec-websocket-protocol"] ?? [])
    .flatMap((value) => value.split(","))
    .map((token) => token.trim())
    .filter((token) => token !== "");
  return { ok: true, accept, protocol: offered[0] ?? null };
}

/** Builds the 101 response for an accepted handshake. */
export function switchingProtocolsResponse(accept: string, protocol: string | null): string {
  const lines = [
    "HTTP/1.1 101 Switching Protocols",
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Accept: ${accept}`,
  ];
  if (protocol !== null) lines.push(`Sec-WebSocket-Protocol: ${protocol}`);
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** Encodes one unmasked frame with FIN set, as a server sends it. */
export function encodeFrame(opcode: number, payload: Uint8Array): Buffer {
  const length = payload.length;
  let header: Buffer;
  if (length < 126) {
    header = Buffer.from([0x80 | opcode, length]);
  } else if (length < 0x10000) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  return Buffer.concat([header, payload]);
}

/** Builds a close-frame payload: the status code, then the UTF-8 reason. */
export function closePayload(code: number, reason: string): Buffer {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2, "utf8");
  return payload;
}

/** Reports whether a peer may send `code` in a close frame (RFC 6455 section 7.4). */
export function isValidCloseCode(code: number): boolean {
  if (code >= 3000 && code <= 4999) return true;
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}

/** Received bytes not yet parsed, kept as a list of chunks to avoid repeated copying. */
class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Returns the first `count` bytes without removing them. The caller checks `length` first. */
  peek(count: number): Buffer {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= count) return first.subarray(0, count);
    return Buffer.concat(this.chunks, this.length).subarray(0, count);
  }

  /** Removes and returns the first `count` bytes. The caller checks `length` first. */
  take(count: number): Buffer {
    const parts: Buffer[] = [];
    let needed = count;
    while (needed > 0) {
      const first = this.chunks[0];
      if (first === undefined) break;
      if (first.length <= needed) {
        parts.push(first);
        this.chunks.shift();
        needed -= first.length;
      } else {
        parts.push(first.subarray(0, needed));
        this.chunks[0] = first.subarray(needed);
        needed = 0;
      }
    }
    this.length -= count;
    return parts.length === 1 && parts[0] !== undefined ? parts[0] : Buffer.concat(parts, count);
  }
}

/** A parsed frame header: sizes in bytes. */
interface FrameHeader {
  fin: boolean;
  opcode: number;
  headerLength: number;
  payloadLength: number;
  mask: Buffer;
}

/**
 * Echoes messages on an upgraded socket: text and binary messages come back unchanged,
 * a ping gets a pong with the same payload, and a close frame gets a close frame with the
 * same code and reason back. The text message "close:CODE:REASON" makes the server start the
 * close handshake with that code and reason instead of echoing it.
 */
export class EchoWebSocket {
  private readonly input = new ByteQueue();
  private fragments: Buffer[] = [];
  private fragmentsLength = 0;
  private fragmentOpcode: number | null = null;
  private closeSent = false;
  /** Set once the server has failed the connection or echoed the client's close frame. */
  private finished = false;
  private closeTimer: ReturnType<typeof setTimeout> | null = null;

  /** `head` contains bytes that arrived after the handshake in the same read. */
  constructor(
    private readonly socket: Duplex,
    head: Buffer,
  ) {
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("end", () => socket.end());
    socket.on("error", () => socket.destroy());
    socket.on("drain", () => socket.resume());
    socket.on("close", () => {
      if (this.closeTimer !== null) clearTimeout(this.closeTimer);
    });
    if (head.length > 0) this.receive(head);
  }

  private send(opcode: number, payload: Uint8Array): void {
    if (this.socket.destroyed) return;
    if (!this.socket.write(encodeFrame(opcode, payload))) this.socket.pause();
  }

  /** Sends a close frame, then ends the connection when the client's close frame arrives or after a timeout. */
  private startClose(code: number, reason: string): void {
    if (this.closeSent) return;
    this.send(OPCODE_CLOSE, closePayload(code, reason));
    this.closeSent = true;
    this.closeTimer = setTimeout(() => this.socket.destroy(), CLOSE_TIMEOUT_MS);
  }

  private receive(chunk: Buffer): void {
    this.input.push(chunk);
    for (;;) {
      if (this.finished || this.socket.destroyed) return;
      const header = this.readHeader();
      if (header === null) return;
      if (this.input.length < header.headerLength + header.payloadLength) return;
      this.input.take(header.headerLength);
      const payload = this.input.take(header.payloadLength);
      for (let index = 0; index < payload.length; index++) {
        payload[index] = (payload[index] ?? 0) ^ (header.mask[index & 3] ?? 0);
      }
      this.handleFrame(header, payload);
    }
  }

  /**
   * Parses the next frame header once enough bytes are buffered. Returns null when more
   * bytes are needed or when the header is invalid, in which case the connection is
   * already closing.
   */
  private readHeader(): FrameHeader | null {
    if (this.input.length < 2) return null;
    const start = this.input.peek(2);
    const first = start[0] ?? 0;
    const second = start[1] ?? 0;
    const opcode = first & 0x0f;
    const fin = (first & 0x80) !== 0;
    if ((first & 0x70) !== 0) return this.fail(CLOSE_PROTOCOL_ERROR, "reserved bits set without a negotiated extension");
    if ((second & 0x80) === 0) return this.fail(CLOSE_PROTOCOL_ERROR, "client frame is not masked");
    const isControl = opcode >= OPCODE_CLOSE;
    if (![OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG].includes(opcode)) {
      return this.fail(CLOSE_PROTOCOL_ERROR, `unknown opcode ${opcode}`);
    }

    let payloadLength = second & 0x7f;
    let lengthBytes = 0;
    if (payloadLength === 126) lengthBytes = 2;
    if (payloadLength === 127) lengthBytes = 8;
    if (isControl && (!fin || lengthBytes > 0)) {
      return this.fail(CLOSE_PROTOCOL_ERROR, "control frame is fragmented or longer than 125 bytes");
    }
    const headerLength = 2 + lengthBytes + 4;
    if (this.input.length < headerLength) return null;
    const bytes = this.input.peek(headerLength);
    if (lengthBytes === 2) payloadLength = bytes.readUInt16BE(2);
    if (lengthBytes === 8) {
      const length = bytes.readBigUInt64BE(2);
      if (length > BigInt(MAX_MESSAGE_BYTES)) return this.fail(CLOSE_MESSAGE_TOO_BIG, "message too big");
      payloadLength = Number(length);
    }
    if (!isControl && this.fragmentsLength + payloadLength > MAX_MESSAGE_BYTES) {
      return this.fail(CLOSE_MESSAGE_TOO_BIG, "message too big");
    }
    const mask = Buffer.from(bytes.subarray(2 + lengthBytes, headerLength));
    return { fin, opcode, headerLength, payloadLength, mask };
  }

  private fail(code: number, reason: string): null {
    this.startClose(code, reason);
    this.finished = true;
    this.socket.end();
    return null;
  }

  private handleFrame(header: FrameHeader, payload: Buffer): void {
    switch (header.opcode) {
      case OPCODE_PING:
        if (!this.closeSent) this.send(OPCODE_PONG, payload);
        return;
      case OPCODE_PONG:
        return;
      case OPCODE_CLOSE:
        this.handleClose(payload);
        return;
      case OPCODE_CONTINUATION:
        if (this.fragmentOpcode === null) {
          this.fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message in progress");
          return;
        }
        this.addFragment(payload);
        if (header.fin) this.finishMessage();
        return;
      default:
        if (this.fragmentOpcode !== null) {
          this.fail(CLOSE_PROTOCOL_ERROR, "new message before the fragmented one ended");
          return;
        }
        this.fragmentOpcode = header.opcode;
        this.addFragment(payload);
        if (header.fin) this.finishMessage();
    }
  }

  private addFragment(payload: Buffer): void {
    this.fragments.push(payload);
    this.fragmentsLength += payload.length;
  }

  private finishMessage(): void {
    const opcode = this.fragmentOpcode ?? OPCODE_BINARY;
    const message = this.fragments.length === 1 && this.fragments[0] !== undefined
      ? this.fragments[0]
      : Buffer.concat(this.fragments, this.fragmentsLength);
    this.fragments = [];
    this.fragmentsLength = 0;
    this.fragmentOpcode = null;
    if (this.closeSent) return;

    if (opcode === OPCODE_TEXT) {
      const text = decodeUtf8(message);
      if (text === null) {
        this.fail(CLOSE_INVALID_PAYLOAD, "text message is not valid UTF-8");
        return;
      }
      const command = /^close:(\d{4}):(.*)$/s.exec(text);
      const code = Number(command?.[1]);
      const reason = command?.[2] ?? "";
      if (command !== null && isValidCloseCode(code) && Buffer.byteLength(reason) <= 123) {
        this.startClose(code, reason);
        return;
      }
    }
    this.send(opcode, message);
  }

  private handleClose(payload: Buffer): void {
    if (this.closeSent) {
      // This is the client's reply to the server's close frame, so the close handshake is complete.
      this.finished = true;
      this.socket.end();
      return;
    }
    if (payload.length === 1) {
      this.fail(CLOSE_PROTOCOL_ERROR, "close frame payload of 1 byte");
      return;
    }
    if (payload.length >= 2) {
      const code = payload.readUInt16BE(0);
      if (!isValidCloseCode(code)) {
        this.fail(CLOSE_PROTOCOL_ERROR, `invalid close code ${code}`);
        return;
      }
      if (decodeUtf8(payload.subarray(2)) === null) {
        this.fail(CLOSE_INVALID_PAYLOAD, "close reason is not valid UTF-8");
        return;
      }
    }
    this.send(OPCODE_CLOSE, payload);
    this.closeSent = true;
    this.finished = true;
    this.socket.end();
  }
}

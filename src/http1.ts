// HTTP/1.1 message heads and chunked bodies, parsed strictly (RFC 9112). The gate reads
// every request itself, so framing is decided here once: a head that two parsers could
// read differently is refused instead of being guessed at.

/** One header line as received: the name as the peer spelled it, and its lower-case form. */
export interface HeaderLine {
  readonly name: string;
  readonly lower: string;
  /** The value without leading and trailing spaces or tabs, bytes decoded as latin1. */
  readonly value: string;
}

/** The framing of the body after a head. */
export type Framing =
  | { readonly kind: "none" }
  | { readonly kind: "length"; readonly length: number }
  | { readonly kind: "chunked" }
  /** Responses only: the body runs until the connection closes. */
  | { readonly kind: "close" };

export interface RequestHead {
  readonly method: string;
  /** The request target exactly as sent. */
  readonly target: string;
  readonly version: "1.0" | "1.1";
  readonly headers: readonly HeaderLine[];
  readonly framing: Framing;
  /** The client wants the connection kept open after this exchange. */
  readonly keepAlive: boolean;
  /** `Expect: 100-continue` was sent. */
  readonly expectContinue: boolean;
  /** `Connection` names `upgrade` and an `Upgrade` header is present. */
  readonly upgradeRequested: boolean;
}

export interface ResponseHead {
  readonly status: number;
  readonly reason: string;
  readonly version: "1.0" | "1.1";
  readonly headers: readonly HeaderLine[];
  readonly framing: Framing;
  /** The connection can carry another request after this response. */
  readonly keepAlive: boolean;
}

export type HeadResult<T> =
  | { readonly ok: true; readonly head: T }
  | { readonly ok: false; readonly status: number; readonly message: string };

/** Largest head the gate reads, request line or status line included. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** Most header lines in one head. */
export const MAX_HEADER_LINES = 200;

const CRLF_CRLF = Buffer.from("\r\n\r\n");

/**
 * Finds the end of a head in `buffer`: the index just past the empty line, or -1 when the
 * head is not complete yet.
 */
export function headEnd(buffer: Buffer, from = 0): number {
  const index = buffer.indexOf(CRLF_CRLF, from);
  return index < 0 ? -1 : index + 4;
}

/** The chunk that ends a chunked body when no trailer fields follow it. */
export const LAST_CHUNK = Buffer.from("0\r\n\r\n");

/** Maximum length of a chunk-size line, chunk extensions included and the CRLF excluded. */
export const MAX_CHUNK_SIZE_LINE_BYTES = 4096;
/** Maximum size of a trailer section, from after the last-chunk line through the final CRLF. */
export const MAX_TRAILER_BYTES = 16 * 1024;
/** Maximum number of hex digits in a chunk size, so that every size fits exactly in a double. */
const MAX_CHUNK_SIZE_DIGITS = 12;
/** Maximum number of decimal digits in a Content-Length element, so that every length fits exactly in a double. */
const MAX_CONTENT_LENGTH_DIGITS = 15;

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const COLON = 0x3a;
const SEMICOLON = 0x3b;

/** Byte classes: 1 for tchar (RFC 9110 token), 2 for field-value bytes (HTAB, SP, VCHAR, obs-text). */
const TCHAR = 1;
const FIELD_BYTE = 2;
const BYTE_CLASS = new Uint8Array(256);
for (let code = 0x21; code <= 0x7e; code++) BYTE_CLASS[code] = FIELD_BYTE;
for (let code = 0x80; code <= 0xff; code++) BYTE_CLASS[code] = FIELD_BYTE;
BYTE_CLASS[TAB] = FIELD_BYTE;
BYTE_CLASS[SPACE] = FIELD_BYTE;
for (const char of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
  BYTE_CLASS[char.charCodeAt(0)] = TCHAR | FIELD_BYTE;
}

/** Hex digit values, or -1 for any other byte. */
const HEX_VALUE = new Int8Array(256).fill(-1);
for (let digit = 0; digit < 16; digit++) {
  HEX_VALUE[digit.toString(16).charCodeAt(0)] = digit;
  HEX_VALUE[digit.toString(16).toUpperCase().charCodeAt(0)] = digit;
}

function isTchar(code: number): boolean {
  return (BYTE_CLASS[code]! & TCHAR) !== 0;
}

function isFieldByte(code: number): boolean {
  return (BYTE_CLASS[code]! & FIELD_BYTE) !== 0;
}

function isWhitespace(code: number): boolean {
  return code === SPACE || code === TAB;
}

function isDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/** Returned by `parseHeaderLines` when the head has more than `MAX_HEADER_LINES` header lines. */
const TOO_MANY_LINES = "too many header lines";

/**
 * Parses the header lines of `text`, from `start` up to the empty line that ends the head, into `headers`.
 * Returns null on success, or the reason the lines are invalid (`TOO_MANY_LINES` when there are too many).
 * The caller has checked that `text` ends with CRLFCRLF.
 */
function parseHeaderLines(text: string, start: number, headers: HeaderLine[]): string | null {
  const limit = text.length - 2;
  let position = start;
  while (position < limit) {
    if (headers.length === MAX_HEADER_LINES) return TOO_MANY_LINES;
    const lineEnd = text.indexOf("\r\n", position);
    let cursor = position;
    while (cursor < lineEnd && isTchar(text.charCodeAt(cursor))) cursor++;
    if (cursor === lineEnd || text.charCodeAt(cursor) !== COLON) {
      if (cursor === position && isWhitespace(text.charCodeAt(cursor))) {
        return "a header line starts with whitespace (obsolete line folding)";
      }
      if (cursor === lineEnd) return "a header line has no colon";
      if (isWhitespace(text.charCodeAt(cursor))) return "whitespace in a header name or before its colon";
      return "a header name contains an invalid character";
    }
    if (cursor === position) return "a header line has no name";
    const name = text.slice(position, cursor);
    let valueStart = cursor + 1;
    for (let index = valueStart; index < lineEnd; index++) {
      if (!isFieldByte(text.charCodeAt(index))) return "a header value contains a control character";
    }
    let valueEnd = lineEnd;
    while (valueStart < valueEnd && isWhitespace(text.charCodeAt(valueStart))) valueStart++;
    while (valueEnd > valueStart && isWhitespace(text.charCodeAt(valueEnd - 1))) valueEnd--;
    headers.push({ name, lower: name.toLowerCase(), value: text.slice(valueStart, valueEnd) });
    position = lineEnd + 2;
  }
  return null;
}

/** Decodes the head and checks that it ends with CRLFCRLF. Returns null when it does not. */
function headText(buffer: Buffer, end: number): string | null {
  if (end < 4 || end > buffer.length) return null;
  const text = buffer.toString("latin1", 0, end);
  return text.endsWith("\r\n\r\n") ? text : null;
}

/**
 * Splits a comma-separated field value into its elements, each trimmed of spaces and tabs and lower-cased.
 * Empty elements are kept so that callers can reject them.
 */
function listElements(value: string): string[] {
  const elements: string[] = [];
  let start = 0;
  for (;;) {
    let comma = value.indexOf(",", start);
    if (comma < 0) comma = value.length;
    let elementStart = start;
    let elementEnd = comma;
    while (elementStart < elementEnd && isWhitespace(value.charCodeAt(elementStart))) elementStart++;
    while (elementEnd > elementStart && isWhitespace(value.charCodeAt(elementEnd - 1))) elementEnd--;
    elements.push(value.slice(elementStart, elementEnd).toLowerCase());
    if (comma === value.length) return elements;
    start = comma + 1;
  }
}

/**
 * Reads a Content-Length value: one or more comma-separated decimal numbers that must all be equal.
 * Returns the number, or -1 when an element is empty, is not all digits, has more than 15 digits, or
 * differs from another element.
 */
function contentLengthValue(value: string): number {
  let result = -1;
  let index = 0;
  const length = value.length;
  for (;;) {
    while (index < length && isWhitespace(value.charCodeAt(index))) index++;
    let digits = 0;
    let number = 0;
    while (index < length && isDigit(value.charCodeAt(index))) {
      number = number * 10 + (value.charCodeAt(index) - 0x30);
      digits++;
      index++;
    }
    if (digits === 0 || digits > MAX_CONTENT_LENGTH_DIGITS) return -1;
    if (result >= 0 && number !== result) return -1;
    result = number;
    while (index < length && isWhitespace(value.charCodeAt(index))) index++;
    if (index === length) return result;
    if (value.charCodeAt(index) !== 0x2c) return -1;
    index++;
  }
}

/** The header fields that decide framing and connection handling, gathered in one pass. */
interface ControlFields {
  hostCount: number;
  /** The agreed Content-Length, -1 when absent, or -2 when any Content-Length line is invalid or they conflict. */
  contentLength: number;
  /** Every Transfer-Encoding element from every line, in order, or null when the header is absent. */
  transferCodings: string[] | null;
  close: boolean;
  keepAliveToken: boolean;
  upgradeToken: boolean;
  upgradeHeader: boolean;
  expectCount: number;
  /** Every Expect line's value is `100-continue`, compared without case. */
  expectContinueOnly: boolean;
}

function readControlFields(headers: readonly HeaderLine[]): ControlFields {
  const fields: ControlFields = {
    hostCount: 0,
    contentLength: -1,
    transferCodings: null,
    close: false,
    keepAliveToken: false,
    upgradeToken: false,
    upgradeHeader: false,
    expectCount: 0,
    expectContinueOnly: true,
  };
  for (const header of headers) {
    switch (header.lower) {
      case "host":
        fields.hostCount++;
        break;
      case "content-length": {
        if (fields.contentLength === -2) break;
        const length = contentLengthValue(header.value);
        if (length < 0 || (fields.contentLength >= 0 && length !== fields.contentLength)) fields.contentLength = -2;
        else fields.contentLength = length;
        break;
      }
      case "transfer-encoding":
        fields.transferCodings ??= [];
        for (const coding of listElements(header.value)) fields.transferCodings.push(coding);
        break;
      case "connection":
        for (const token of listElements(header.value)) {
          if (token === "close") fields.close = true;
          else if (token === "keep-alive") fields.keepAliveToken = true;
          else if (token === "upgrade") fields.upgradeToken = true;
        }
        break;
      case "upgrade":
        fields.upgradeHeader = true;
        break;
      case "expect":
        fields.expectCount++;
        if (header.value.toLowerCase() !== "100-continue") fields.expectContinueOnly = false;
        break;
    }
  }
  return fields;
}

function reject<T>(status: number, message: string): HeadResult<T> {
  return { ok: false, status, message };
}

const NONE: Framing = { kind: "none" };
const CHUNKED: Framing = { kind: "chunked" };
const CLOSE: Framing = { kind: "close" };

/**
 * Parses the request head in `buffer[0, end)`, where `end` is the value `headEnd` returned. Returns the head,
 * or the status to reject it with. That status is 400 for a malformed or ambiguous head, 431 for too many
 * header lines or a head longer than `MAX_HEAD_BYTES`, and 501 for a Transfer-Encoding other than `chunked`.
 * It is 505 for an HTTP version other than 1.0 and 1.1, and 417 for an Expect value other than `100-continue`.
 */
export function parseRequestHead(buffer: Buffer, end: number): HeadResult<RequestHead> {
  if (end > MAX_HEAD_BYTES) return reject(431, "Request Header Fields Too Large: the request head is too long");
  const text = headText(buffer, end);
  if (text === null) return reject(400, "Bad Request: the request head does not end with an empty line");

  // An empty line before the request line is rejected here; src/client.ts skips such lines
  // before parsing, as RFC 9112 section 2.2 allows.
  const lineEnd = text.indexOf("\r\n");
  let cursor = 0;
  while (cursor < lineEnd && isTchar(text.charCodeAt(cursor))) cursor++;
  if (cursor === 0 || text.charCodeAt(cursor) !== SPACE) return reject(400, "Bad Request: malformed request method");
  const method = text.slice(0, cursor);
  const targetStart = ++cursor;
  while (cursor < lineEnd) {
    const code = text.charCodeAt(cursor);
    if (code < 0x21 || code > 0x7e) break;
    cursor++;
  }
  if (cursor === targetStart || text.charCodeAt(cursor) !== SPACE) {
    return reject(400, "Bad Request: malformed request target");
  }
  const target = text.slice(targetStart, cursor);
  const versionStart = cursor + 1;
  const version = requestVersion(text, versionStart, lineEnd);
  if (version === 505) return reject(505, "HTTP Version Not Supported: only HTTP/1.1 and HTTP/1.0 are supported");
  if (version === 400) return reject(400, "Bad Request: malformed HTTP version");

  const headers: HeaderLine[] = [];
  const lineError = parseHeaderLines(text, lineEnd + 2, headers);
  if (lineError === TOO_MANY_LINES) return reject(431, "Request Header Fields Too Large: too many header lines");
  if (lineError !== null) return reject(400, `Bad Request: ${lineError}`);

  const fields = readControlFields(headers);
  const http11 = version === "1.1";
  if (fields.hostCount > 1) return reject(400, "Bad Request: more than one Host header");
  if (http11 && fields.hostCount === 0) return reject(400, "Bad Request: missing Host header");
  if (fields.contentLength === -2) return reject(400, "Bad Request: invalid Content-Length");

  let framing: Framing = NONE;
  if (fields.transferCodings !== null) {
    if (!http11) return reject(400, "Bad Request: Transfer-Encoding in an HTTP/1.0 request");
    if (fields.contentLength >= 0) return reject(400, "Bad Request: both Content-Length and Transfer-Encoding");
    const codings = fields.transferCodings;
    if (codings.length !== 1 || codings[0] !== "chunked") {
      return reject(501, "Not Implemented: unsupported Transfer-Encoding");
    }
    framing = CHUNKED;
  } else if (fields.contentLength > 0) {
    framing = { kind: "length", length: fields.contentLength };
  }

  if (!fields.expectContinueOnly) return reject(417, "Expectation Failed");

  return {
    ok: true,
    head: {
      method,
      target,
      version,
      headers,
      framing,
      keepAlive: http11 ? !fields.close : fields.keepAliveToken && !fields.close,
      // HTTP/1.0 clients cannot read a 100 response, so RFC 9110 section 10.1.1 has servers ignore the expectation.
      expectContinue: http11 && fields.expectCount > 0,
      upgradeRequested: fields.upgradeToken && fields.upgradeHeader,
    },
  };
}

/**
 * Reads the HTTP version at the end of a request line. Returns the version, 505 for another
 * `HTTP/DIGIT.DIGIT`, or 400 for anything else.
 */
function requestVersion(text: string, start: number, end: number): "1.0" | "1.1" | 400 | 505 {
  if (end - start !== 8 || !text.startsWith("HTTP/", start)) return 400;
  const major = text.charCodeAt(start + 5);
  const minor = text.charCodeAt(start + 7);
  if (!isDigit(major) || text.charCodeAt(start + 6) !== 0x2e || !isDigit(minor)) return 400;
  if (major === 0x31 && minor === 0x31) return "1.1";
  if (major === 0x31 && minor === 0x30) return "1.0";
  return 505;
}

/**
 * Parses the response head in `buffer[0, end)`, where `end` is the value `headEnd` returned, for a request
 * sent with `requestMethod`. Returns the head, or status 502 with the reason when the response is malformed
 * or its framing is ambiguous.
 */
export function parseResponseHead(buffer: Buffer, end: number, requestMethod: string): HeadResult<ResponseHead> {
  if (end > MAX_HEAD_BYTES) return reject(502, "Invalid response from upstream: the response head is too long");
  const text = headText(buffer, end);
  if (text === null) return reject(502, "Invalid response from upstream: the head does not end with an empty line");

  const lineEnd = text.indexOf("\r\n");
  let version: "1.0" | "1.1";
  if (text.startsWith("HTTP/1.1 ")) version = "1.1";
  else if (text.startsWith("HTTP/1.0 ")) version = "1.0";
  else return reject(502, "Invalid response from upstream: malformed status line");
  const first = text.charCodeAt(9);
  const second = text.charCodeAt(10);
  const third = text.charCodeAt(11);
  if (lineEnd < 12 || !isDigit(first) || !isDigit(second) || !isDigit(third)) {
    return reject(502, "Invalid response from upstream: malformed status code");
  }
  const status = (first - 0x30) * 100 + (second - 0x30) * 10 + (third - 0x30);
  if (status < 100 || status > 599) return reject(502, "Invalid response from upstream: status code out of range");
  let reason = "";
  if (lineEnd > 12) {
    if (text.charCodeAt(12) !== SPACE) return reject(502, "Invalid response from upstream: malformed status line");
    for (let index = 13; index < lineEnd; index++) {
      if (!isFieldByte(text.charCodeAt(index))) {
        return reject(502, "Invalid response from upstream: the reason phrase contains a control character");
      }
    }
    reason = text.slice(13, lineEnd);
  }

  const headers: HeaderLine[] = [];
  const lineError = parseHeaderLines(text, lineEnd + 2, headers);
  if (lineError !== null) return reject(502, `Invalid response from upstream: ${lineError}`);

  const fields = readControlFields(headers);
  if (fields.contentLength === -2) return reject(502, "Invalid response from upstream: invalid Content-Length");

  let framing: Framing;
  const codings = fields.transferCodings;
  if (codings !== null) {
    // RFC 9112 section 6.1: a recipient of an HTTP/1.0 message with Transfer-Encoding treats its framing as faulty.
    if (version === "1.0") return reject(502, "Invalid response from upstream: Transfer-Encoding in HTTP/1.0");
    let chunkedCount = 0;
    for (const coding of codings) {
      if (coding === "") return reject(502, "Invalid response from upstream: empty Transfer-Encoding element");
      if (coding === "chunked") chunkedCount++;
    }
    const chunkedLast = codings[codings.length - 1] === "chunked";
    if (chunkedCount > (chunkedLast ? 1 : 0)) {
      return reject(502, "Invalid response from upstream: chunked applied more than once or not last");
    }
    framing = chunkedLast ? CHUNKED : CLOSE;
  } else if (fields.contentLength > 0) {
    framing = { kind: "length", length: fields.contentLength };
  } else {
    framing = fields.contentLength === 0 ? NONE : CLOSE;
  }
  if (requestMethod === "HEAD" || status < 200 || status === 204 || status === 304) framing = NONE;

  const keepAlive =
    framing.kind !== "close" && (version === "1.1" ? !fields.close : fields.keepAliveToken && !fields.close);
  return { ok: true, head: { status, reason, version, headers, framing, keepAlive } };
}

/**
 * Frames `data` as one chunk: its size in hex, CRLF, the data and CRLF, in one new buffer. Returns an empty
 * buffer for empty data, because an empty chunk would end the body.
 */
export function encodeChunk(data: Buffer): Buffer {
  if (data.length === 0) return Buffer.alloc(0);
  const size = data.length.toString(16);
  const chunk = Buffer.allocUnsafe(size.length + data.length + 4);
  let offset = chunk.write(size, 0, "latin1");
  chunk[offset++] = CR;
  chunk[offset++] = LF;
  offset += data.copy(chunk, offset);
  chunk[offset++] = CR;
  chunk[offset] = LF;
  return chunk;
}

export type ChunkResult =
  | {
      readonly ok: true;
      /** Chunk payload pieces in order, as subarrays of the input, never empty. */
      readonly data: Buffer[];
      /** Bytes of the input that belong to this body. */
      readonly consumed: number;
      /** The last chunk and the trailer section have been read. */
      readonly done: boolean;
    }
  | { readonly ok: false; readonly message: string };

const enum ChunkState {
  /** Hex digits of the chunk size, then CR, `;` or whitespace before a `;`. */
  Size,
  /** Whitespace after the size digits, which only a `;` may follow. */
  SizeWhitespace,
  Extension,
  SizeLineFeed,
  Data,
  DataCarriageReturn,
  DataLineFeed,
  /** Start of a trailer line, or of the empty line that ends the body. */
  TrailerLineStart,
  TrailerName,
  TrailerValue,
  TrailerLineFeed,
  FinalLineFeed,
  Done,
  Failed,
}

/**
 * Decodes a chunked message body (RFC 9112 section 7.1) fed in pieces of any size. Trailer fields are
 * checked like header fields and then discarded. After an error every later `push` returns the same error.
 */
export class ChunkedDecoder {
  private state = ChunkState.Size;
  private sizeDigits = 0;
  /** Bytes of the current chunk-size line read so far, CRLF excluded. */
  private sizeLineBytes = 0;
  /** Payload bytes left in the current chunk. */
  private remaining = 0;
  private trailerBytes = 0;
  private failure = "";

  /** Frames `data` as one chunk, like the module's `encodeChunk`. */
  static encodeChunk(data: Buffer): Buffer {
    return encodeChunk(data);
  }

  /** The last chunk and trailer section have been read. */
  get done(): boolean {
    return this.state === ChunkState.Done;
  }

  /** Decodes the next piece of the body. */
  push(input: Buffer): ChunkResult {
    if (this.state === ChunkState.Failed) return { ok: false, message: this.failure };
    if (this.state === ChunkState.Done) return { ok: true, data: [], consumed: 0, done: true };
    const data: Buffer[] = [];
    const length = input.length;
    let index = 0;
    while (index < length) {
      const state = this.state;
      if (state === ChunkState.Data) {
        const take = Math.min(this.remaining, length - index);
        data.push(input.subarray(index, index + take));
        index += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = ChunkState.DataCarriageReturn;
        continue;
      }
      const code = input[index]!;
      index++;
      if (state >= ChunkState.TrailerLineStart && ++this.trailerBytes > MAX_TRAILER_BYTES) {
        return this.fail("the trailer section is too long");
      }
      if (state <= ChunkState.Extension && code !== CR && ++this.sizeLineBytes > MAX_CHUNK_SIZE_LINE_BYTES) {
        return this.fail("a chunk-size line is too long");
      }
      switch (state) {
        case ChunkState.Size: {
          const digit = HEX_VALUE[code]!;
          if (digit >= 0) {
            if (++this.sizeDigits > MAX_CHUNK_SIZE_DIGITS) return this.fail("a chunk size has too many digits");
            this.remaining = this.remaining * 16 + digit;
          } else if (this.sizeDigits === 0) {
            return this.fail("a chunk size is not a hexadecimal number");
          } else if (code === CR) {
            this.state = ChunkState.SizeLineFeed;
          } else if (code === SEMICOLON) {
            this.state = ChunkState.Extension;
          } else if (isWhitespace(code)) {
            this.state = ChunkState.SizeWhitespace;
          } else {
            return this.fail("a chunk size is not a hexadecimal number");
          }
          break;
        }
        case ChunkState.SizeWhitespace:
          if (code === SEMICOLON) this.state = ChunkState.Extension;
          else if (!isWhitespace(code)) return this.fail("whitespace after a chunk size without an extension");
          break;
        case ChunkState.Extension:
          if (code === CR) this.state = ChunkState.SizeLineFeed;
          else if (!isFieldByte(code)) return this.fail("a chunk extension contains a control character");
          break;
        case ChunkState.SizeLineFeed:
          if (code !== LF) return this.fail("a chunk-size line does not end with CRLF");
          this.sizeDigits = 0;
          this.sizeLineBytes = 0;
          this.state = this.remaining === 0 ? ChunkState.TrailerLineStart : ChunkState.Data;
          break;
        case ChunkState.DataCarriageReturn:
          if (code !== CR) return this.fail("chunk data is not followed by CRLF");
          this.state = ChunkState.DataLineFeed;
          break;
        case ChunkState.DataLineFeed:
          if (code !== LF) return this.fail("chunk data is not followed by CRLF");
          this.state = ChunkState.Size;
          break;
        case ChunkState.TrailerLineStart:
          if (code === CR) this.state = ChunkState.FinalLineFeed;
          else if (isTchar(code)) this.state = ChunkState.TrailerName;
          else if (isWhitespace(code)) return this.fail("a trailer line starts with whitespace (obsolete folding)");
          else return this.fail("a trailer line has no valid field name");
          break;
        case ChunkState.TrailerName:
          if (code === COLON) this.state = ChunkState.TrailerValue;
          else if (!isTchar(code)) return this.fail("a trailer field name contains an invalid character");
          break;
        case ChunkState.TrailerValue:
          if (code === CR) this.state = ChunkState.TrailerLineFeed;
          else if (!isFieldByte(code)) return this.fail("a trailer field value contains a control character");
          break;
        case ChunkState.TrailerLineFeed:
          if (code !== LF) return this.fail("a trailer line does not end with CRLF");
          this.state = ChunkState.TrailerLineStart;
          break;
        case ChunkState.FinalLineFeed:
          if (code !== LF) return this.fail("the trailer section does not end with CRLF");
          this.state = ChunkState.Done;
          return { ok: true, data, consumed: index, done: true };
      }
    }
    return { ok: true, data, consumed: length, done: false };
  }

  private fail(message: string): ChunkResult {
    this.state = ChunkState.Failed;
    this.failure = `invalid chunked body: ${message}`;
    return { ok: false, message: this.failure };
  }
}

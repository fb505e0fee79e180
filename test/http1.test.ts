// Checks the strict HTTP/1.1 parser: which request and response heads it accepts, how it frames
// their bodies, and how the chunked decoder behaves on valid, split and corrupted bodies.
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  ChunkedDecoder,
  encodeChunk,
  headEnd,
  LAST_CHUNK,
  MAX_HEAD_BYTES,
  MAX_HEADER_LINES,
  parseRequestHead,
  parseResponseHead,
  type Framing,
  type HeadResult,
  type RequestHead,
  type ResponseHead,
} from "../src/http1.ts";

/** Parses `head` (latin1 text that must contain CRLFCRLF) as a request head. */
function parseRequest(head: string): HeadResult<RequestHead> {
  const buffer = Buffer.from(head, "latin1");
  const end = headEnd(buffer);
  if (end < 0) throw new Error("test head has no CRLFCRLF");
  return parseRequestHead(buffer, end);
}

/** Parses `head` as the response to a request sent with `method`. */
function parseResponse(head: string, method = "GET"): HeadResult<ResponseHead> {
  const buffer = Buffer.from(head, "latin1");
  const end = headEnd(buffer);
  if (end < 0) throw new Error("test head has no CRLFCRLF");
  return parseResponseHead(buffer, end, method);
}

function acceptedRequest(head: string): RequestHead {
  const result = parseRequest(head);
  if (!result.ok) throw new Error(`request rejected with ${result.status}: ${result.message}`);
  return result.head;
}

function acceptedResponse(head: string, method = "GET"): ResponseHead {
  const result = parseResponse(head, method);
  if (!result.ok) throw new Error(`response rejected with ${result.status}: ${result.message}`);
  return result.head;
}

/** Builds a request head from its request line and header lines. */
function requestHead(requestLine: string, ...headers: string[]): string {
  return [requestLine, ...headers, "", ""].join("\r\n");
}

const GET = "GET / HTTP/1.1";
const POST = "POST /api/v4/users/login HTTP/1.1";
const HOST = "Host: chat.example.com";

describe("headEnd", () => {
  test("returns the index just past CRLFCRLF", () => {
    expect(headEnd(Buffer.from("GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"))).toBe(27);
  });

  test("returns -1 for an incomplete head", () => {
    expect(headEnd(Buffer.from("GET / HTTP/1.1\r\nHost: a\r\n"))).toBe(-1);
  });
});

describe("parseRequestHead accepts", () => {
  const cases: [string, string, Partial<RequestHead>][] = [
    ["a minimal HTTP/1.1 GET", requestHead(GET, HOST), { method: "GET", target: "/", version: "1.1" }],
    ["an HTTP/1.0 request without Host", requestHead("GET / HTTP/1.0"), { version: "1.0", keepAlive: false }],
    ["a method made of any tchar", requestHead("M-._~!#$%&'*+^`|9 / HTTP/1.1", HOST), { method: "M-._~!#$%&'*+^`|9" }],
    [
      "a target of any visible ASCII byte",
      requestHead("GET /a?b=c&d=%20#x!~[]{} HTTP/1.1", HOST),
      { target: "/a?b=c&d=%20#x!~[]{}" },
    ],
    ["an absolute-form target", requestHead("GET http://a/b HTTP/1.1", HOST), { target: "http://a/b" }],
    ["an asterisk-form target", requestHead("OPTIONS * HTTP/1.1", HOST), { target: "*" }],
    ["Content-Length 0 as no body", requestHead(POST, HOST, "Content-Length: 0"), { framing: { kind: "none" } }],
    [
      "a positive Content-Length",
      requestHead(POST, HOST, "Content-Length: 42"),
      { framing: { kind: "length", length: 42 } },
    ],
    [
      "repeated equal Content-Length elements and lines",
      requestHead(POST, HOST, "Content-Length: 7, 7", "Content-Length: 007"),
      { framing: { kind: "length", length: 7 } },
    ],
    [
      "a 15-digit Content-Length",
      requestHead(POST, HOST, "Content-Length: 999999999999999"),
      { framing: { kind: "length", length: 999_999_999_999_999 } },
    ],
    [
      "Transfer-Encoding chunked in any case",
      requestHead(POST, HOST, "Transfer-Encoding:  ChUnKeD "),
      { framing: { kind: "chunked" } },
    ],
    ["no body without framing headers", requestHead(POST, HOST), { framing: { kind: "none" } }],
    ["HTTP/1.1 keep-alive by default", requestHead(GET, HOST), { keepAlive: true }],
    ["Connection: close in HTTP/1.1", requestHead(GET, HOST, "Connection: Close"), { keepAlive: false }],
    [
      "close among several Connection lines",
      requestHead(GET, HOST, "Connection: keep-alive", "Connection: foo, close"),
      { keepAlive: false },
    ],
    [
      "HTTP/1.0 keep-alive when asked for",
      requestHead("GET / HTTP/1.0", "Connection: Keep-Alive"),
      { keepAlive: true },
    ],
    [
      "HTTP/1.0 close winning over keep-alive",
      requestHead("GET / HTTP/1.0", "Connection: keep-alive, close"),
      { keepAlive: false },
    ],
    ["Expect: 100-continue", requestHead(POST, HOST, "Expect: 100-Continue"), { expectContinue: true }],
    [
      "Expect: 100-continue ignored in HTTP/1.0",
      requestHead("POST / HTTP/1.0", "Expect: 100-continue"),
      { expectContinue: false },
    ],
    [
      "an upgrade request",
      requestHead(GET, HOST, "Connection: keep-alive, Upgrade", "Upgrade: websocket"),
      { upgradeRequested: true, keepAlive: true },
    ],
    [
      "an Upgrade header without the Connection token as no upgrade",
      requestHead(GET, HOST, "Upgrade: websocket"),
      { upgradeRequested: false },
    ],
    [
      "a Connection upgrade token without an Upgrade header as no upgrade",
      requestHead(GET, HOST, "Connection: upgrade"),
      { upgradeRequested: false },
    ],
    [
      "empty Connection list elements",
      requestHead(GET, HOST, "Connection: , ,close,"),
      { keepAlive: false },
    ],
    ["a header value of obs-text bytes", requestHead(GET, HOST, "X-Name: caf\xe9\xff"), {}],
    ["an empty header value", requestHead(GET, HOST, "X-Empty:"), {}],
    ["exactly the maximum number of header lines", requestHead(GET, HOST, ...manyHeaders(MAX_HEADER_LINES - 1)), {}],
  ];

  for (const [name, head, expected] of cases) {
    test(name, () => {
      expect(acceptedRequest(head)).toMatchObject(expected);
    });
  }

  test("header lines in order and trimmed", () => {
    const head = acceptedRequest(requestHead(GET, "HOST: a", "X-A:\t one \t", "x-a: two", "Cookie: a=b; c=d"));
    expect(head.headers).toEqual([
      { name: "HOST", lower: "host", value: "a" },
      { name: "X-A", lower: "x-a", value: "one" },
      { name: "x-a", lower: "x-a", value: "two" },
      { name: "Cookie", lower: "cookie", value: "a=b; c=d" },
    ]);
  });

  test("inner whitespace of a header value kept", () => {
    expect(acceptedRequest(requestHead(GET, HOST, "X-A: a \t b")).headers[1]?.value).toBe("a \t b");
  });
});

describe("parseRequestHead rejects", () => {
  const cases: [string, string, number][] = [
    ["a bare LF ending a header line", `${GET}\r\nHost: a\nX: b\r\n\r\n`, 400],
    ["a bare LF ending the request line", `${GET}\nHost: a\r\n\r\n`, 400],
    ["a bare CR inside a header value", requestHead(GET, HOST, "X: a\rb"), 400],
    ["a bare CR before CRLF", requestHead(GET, "Host: a\r"), 400],
    ["a NUL in a header value", requestHead(GET, HOST, "X: a\0b"), 400],
    ["a DEL in a header value", requestHead(GET, HOST, "X: a\x7fb"), 400],
    ["a control byte in a header value", requestHead(GET, HOST, "X: a\x01b"), 400],
    ["whitespace before the colon", requestHead(GET, HOST, "Content-Length : 5"), 400],
    ["a tab before the colon", requestHead(GET, HOST, "X\t: 5"), 400],
    ["a header name with a space", requestHead(GET, HOST, "Transfer Encoding: chunked"), 400],
    ["a header name with a non-token byte", requestHead(GET, HOST, "X(y): 1"), 400],
    ["a header name with obs-text", requestHead(GET, HOST, "X\xe9: 1"), 400],
    ["an empty header name", requestHead(GET, HOST, ": value"), 400],
    ["a header line without a colon", requestHead(GET, HOST, "NoColon"), 400],
    ["obs-fold with a space", requestHead(GET, HOST, "X-A: one", " two"), 400],
    ["obs-fold with a tab", requestHead(GET, HOST, "X-A: one", "\ttwo"), 400],
    ["a leading empty line before the request line", `\r\n${requestHead(GET, HOST)}`, 400],
    ["a space inside the method", requestHead("G ET / HTTP/1.1", HOST), 400],
    ["an empty method", requestHead(" / HTTP/1.1", HOST), 400],
    ["a method with a non-token byte", requestHead("GE@T / HTTP/1.1", HOST), 400],
    ["two spaces after the method", requestHead("GET  / HTTP/1.1", HOST), 400],
    ["two spaces after the target", requestHead("GET /  HTTP/1.1", HOST), 400],
    ["a tab as separator", requestHead("GET\t/ HTTP/1.1", HOST), 400],
    ["a target with obs-text", requestHead("GET /caf\xe9 HTTP/1.1", HOST), 400],
    ["a trailing space after the version", requestHead("GET / HTTP/1.1 ", HOST), 400],
    ["a missing version", requestHead("GET /", HOST), 400],
    ["a lower-case protocol name", requestHead("GET / http/1.1", HOST), 400],
    ["a multi-digit version", requestHead("GET / HTTP/1.10", HOST), 400],
    ["a version without a minor digit", requestHead("GET / HTTP/2", HOST), 400],
    ["HTTP/2.0 as unsupported", requestHead("GET / HTTP/2.0", HOST), 505],
    ["HTTP/1.2 as unsupported", requestHead("GET / HTTP/1.2", HOST), 505],
    ["HTTP/0.9 as unsupported", requestHead("GET / HTTP/0.9", HOST), 505],
    ["an HTTP/1.1 request without Host", requestHead(GET, "X: a"), 400],
    ["an HTTP/1.1 request with two Host lines", requestHead(GET, HOST, "host: evil.example"), 400],
    ["an HTTP/1.0 request with two Host lines", requestHead("GET / HTTP/1.0", HOST, HOST), 400],
    ["conflicting Content-Length elements", requestHead(POST, HOST, "Content-Length: 1, 2"), 400],
    ["conflicting Content-Length lines", requestHead(POST, HOST, "Content-Length: 1", "Content-Length: 2"), 400],
    ["a signed Content-Length", requestHead(POST, HOST, "Content-Length: +5"), 400],
    ["a negative Content-Length", requestHead(POST, HOST, "Content-Length: -1"), 400],
    ["a hexadecimal Content-Length", requestHead(POST, HOST, "Content-Length: 0x10"), 400],
    ["a Content-Length with a space inside", requestHead(POST, HOST, "Content-Length: 1 0"), 400],
    ["an empty Content-Length", requestHead(POST, HOST, "Content-Length:"), 400],
    ["an empty Content-Length element", requestHead(POST, HOST, "Content-Length: 5,,5"), 400],
    ["a 16-digit Content-Length", requestHead(POST, HOST, "Content-Length: 0000000000000005"), 400],
    ["a fractional Content-Length", requestHead(POST, HOST, "Content-Length: 5.0"), 400],
    [
      "Content-Length with Transfer-Encoding",
      requestHead(POST, HOST, "Content-Length: 5", "Transfer-Encoding: chunked"),
      400,
    ],
    [
      "Content-Length 0 with Transfer-Encoding",
      requestHead(POST, HOST, "Transfer-Encoding: chunked", "Content-Length: 0"),
      400,
    ],
    ["Transfer-Encoding in HTTP/1.0", requestHead("POST / HTTP/1.0", "Transfer-Encoding: chunked"), 400],
    [
      "Transfer-Encoding chunked twice in one line",
      requestHead(POST, HOST, "Transfer-Encoding: chunked, chunked"),
      501,
    ],
    [
      "Transfer-Encoding chunked on two lines",
      requestHead(POST, HOST, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
      501,
    ],
    ["Transfer-Encoding xchunked", requestHead(POST, HOST, "Transfer-Encoding: xchunked"), 501],
    ["Transfer-Encoding gzip", requestHead(POST, HOST, "Transfer-Encoding: gzip"), 501],
    ["Transfer-Encoding gzip then chunked", requestHead(POST, HOST, "Transfer-Encoding: gzip, chunked"), 501],
    ["Transfer-Encoding identity", requestHead(POST, HOST, "Transfer-Encoding: identity"), 501],
    ["an empty Transfer-Encoding", requestHead(POST, HOST, "Transfer-Encoding:"), 501],
    ["an empty Transfer-Encoding element", requestHead(POST, HOST, "Transfer-Encoding: chunked,"), 501],
    ["Transfer-Encoding with parameters", requestHead(POST, HOST, "Transfer-Encoding: chunked;q=1"), 501],
    ["an Expect value other than 100-continue", requestHead(POST, HOST, "Expect: 200-ok"), 417],
    ["100-continue listed with another expectation", requestHead(POST, HOST, "Expect: 100-continue, x"), 417],
    ["more header lines than the maximum", requestHead(GET, HOST, ...manyHeaders(MAX_HEADER_LINES)), 431],
  ];

  for (const [name, head, status] of cases) {
    test(name, () => {
      const result = parseRequest(head);
      expect(result).toMatchObject({ ok: false, status });
    });
  }

  test("a head longer than the maximum with 431", () => {
    const head = requestHead(GET, HOST, `X: ${"a".repeat(MAX_HEAD_BYTES)}`);
    expect(parseRequest(head)).toMatchObject({ ok: false, status: 431 });
  });

  test("an end that does not follow CRLFCRLF with 400", () => {
    const buffer = Buffer.from(requestHead(GET, HOST));
    expect(parseRequestHead(buffer, buffer.length - 1)).toMatchObject({ ok: false, status: 400 });
  });

  test("an unsupported Transfer-Encoding with the Not Implemented message", () => {
    expect(parseRequest(requestHead(POST, HOST, "Transfer-Encoding: gzip"))).toEqual({
      ok: false,
      status: 501,
      message: "Not Implemented: unsupported Transfer-Encoding",
    });
  });

  test("without echoing request data in the message", () => {
    const secret = "s3cr3t-value";
    const heads = [
      requestHead(`GET /${secret} HTTP/9.9`, HOST),
      requestHead(GET, HOST, `X-${secret}\x01: 1`),
      requestHead(POST, HOST, `Content-Length: ${secret}`),
      requestHead(POST, HOST, `Transfer-Encoding: ${secret}`),
      requestHead(POST, HOST, `Expect: ${secret}`),
    ];
    for (const head of heads) {
      const result = parseRequest(head);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.message).not.toContain(secret);
    }
  });
});

describe("parseRequestHead against request smuggling", () => {
  const smuggling: [string, string][] = [
    ["CL with TE", requestHead(POST, HOST, "Content-Length: 4", "Transfer-Encoding: chunked")],
    ["TE with CL", requestHead(POST, HOST, "Transfer-Encoding: chunked", "Content-Length: 4")],
    ["TE chunked twice", requestHead(POST, HOST, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked")],
    ["TE xchunked", requestHead(POST, HOST, "Transfer-Encoding: xchunked")],
    ["TE with a space before the colon", requestHead(POST, HOST, "Transfer-Encoding : chunked")],
    ["TE folded onto a second line", requestHead(POST, HOST, "Transfer-Encoding:", " chunked")],
    ["TE with a vertical tab", requestHead(POST, HOST, "Transfer-Encoding:\x0bchunked")],
    ["CL 1, 2", requestHead(POST, HOST, "Content-Length: 1, 2")],
    ["CL +5", requestHead(POST, HOST, "Content-Length: +5")],
    ["CL 0x10", requestHead(POST, HOST, "Content-Length: 0x10")],
    ["CL folded", requestHead(POST, HOST, "Content-Length: 5", " 6")],
    ["a bare LF hiding a header", `${POST}\r\nHost: a\r\nX: y\nContent-Length: 5\r\n\r\n`],
    ["a NUL in a value", requestHead(POST, HOST, "Content-Length: 5\0")],
    ["Host missing", requestHead(GET)],
    ["Host duplicated", requestHead(GET, "Host: a", "Host: b")],
    ["HTTP/1.0 with TE", requestHead("POST / HTTP/1.0", "Transfer-Encoding: chunked", "Content-Length: 3")],
    ["a header name with a space", requestHead(POST, HOST, "Content Length: 5")],
  ];

  for (const [name, head] of smuggling) {
    test(`rejects ${name}`, () => {
      const result = parseRequest(head);
      expect(result.ok).toBe(false);
      if (!result.ok) expect([400, 501]).toContain(result.status);
    });
  }
});

describe("parseResponseHead framing", () => {
  const cases: [string, string, string, Framing, boolean][] = [
    ["no body for HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD", { kind: "none" }, true],
    [
      "no body for HEAD even with chunked",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
      "HEAD",
      { kind: "none" },
      true,
    ],
    ["no body for 204", "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", "GET", { kind: "none" }, true],
    ["no body for 304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "GET", { kind: "none" }, true],
    ["no body for 100", "HTTP/1.1 100 Continue\r\n\r\n", "POST", { kind: "none" }, true],
    [
      "no body for 101",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
      "GET",
      { kind: "none" },
      true,
    ],
    ["no body for 103", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", "GET", { kind: "none" }, true],
    ["chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", { kind: "chunked" }, true],
    [
      "chunked after gzip",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n",
      "GET",
      { kind: "chunked" },
      true,
    ],
    [
      "chunked with Content-Length ignored",
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      "GET",
      { kind: "chunked" },
      true,
    ],
    ["close for gzip alone", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", { kind: "close" }, false],
    ["length", "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "GET", { kind: "length", length: 12 }, true],
    ["none for Content-Length 0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", { kind: "none" }, true],
    ["close without framing headers", "HTTP/1.1 200 OK\r\n\r\n", "GET", { kind: "close" }, false],
    ["close for HTTP/1.0 without length", "HTTP/1.0 200 OK\r\n\r\n", "GET", { kind: "close" }, false],
    [
      "HTTP/1.0 keep-alive with length",
      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
      "GET",
      { kind: "length", length: 2 },
      true,
    ],
    [
      "HTTP/1.0 without keep-alive",
      "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
      "GET",
      { kind: "length", length: 2 },
      false,
    ],
    [
      "HTTP/1.1 Connection: close",
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
      "GET",
      { kind: "length", length: 2 },
      false,
    ],
  ];

  for (const [name, head, method, framing, keepAlive] of cases) {
    test(name, () => {
      const response = acceptedResponse(head, method);
      expect(response.framing).toEqual(framing);
      expect(response.keepAlive).toBe(keepAlive);
    });
  }
});

describe("parseResponseHead status line", () => {
  test("reads status, reason and version", () => {
    expect(acceptedResponse("HTTP/1.0 404 Not \tFound\xe9\r\nContent-Length: 0\r\n\r\n")).toMatchObject({
      status: 404,
      reason: "Not \tFound\xe9",
      version: "1.0",
    });
  });

  test("accepts a status line without a reason", () => {
    expect(acceptedResponse("HTTP/1.1 200\r\n\r\n")).toMatchObject({ status: 200, reason: "" });
  });

  test("accepts an empty reason after the space", () => {
    expect(acceptedResponse("HTTP/1.1 599 \r\n\r\n")).toMatchObject({ status: 599, reason: "" });
  });

  test("keeps header lines like a request", () => {
    expect(acceptedResponse("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n").headers).toEqual([
      { name: "Set-Cookie", lower: "set-cookie", value: "a=1" },
      { name: "Set-Cookie", lower: "set-cookie", value: "b=2" },
    ]);
  });
});

describe("parseResponseHead rejects with 502", () => {
  const cases: [string, string][] = [
    ["HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n"],
    ["a lower-case protocol name", "http/1.1 200 OK\r\n\r\n"],
    ["a two-digit status", "HTTP/1.1 99 Old\r\n\r\n"],
    ["a four-digit status", "HTTP/1.1 2000 OK\r\n\r\n"],
    ["a status below 100", "HTTP/1.1 099 Low\r\n\r\n"],
    ["a status above 599", "HTTP/1.1 600 High\r\n\r\n"],
    ["a tab after the status", "HTTP/1.1 200\tOK\r\n\r\n"],
    ["two spaces after the version", "HTTP/1.1  200 OK\r\n\r\n"],
    ["a control byte in the reason", "HTTP/1.1 200 O\x01K\r\n\r\n"],
    ["a bare LF in the status line", "HTTP/1.1 200 OK\nX: y\r\n\r\n"],
    ["whitespace before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n"],
    ["obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"],
    ["a NUL in a header value", "HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n"],
    ["conflicting Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
    ["an invalid Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n"],
    ["chunked applied twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"],
    ["chunked before another coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"],
    ["an empty Transfer-Encoding element", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip,\r\n\r\n"],
    ["Transfer-Encoding in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"],
  ];

  for (const [name, head] of cases) {
    test(name, () => {
      expect(parseResponse(head)).toMatchObject({ ok: false, status: 502 });
    });
  }

  test("more header lines than the maximum", () => {
    const head = ["HTTP/1.1 200 OK", ...manyHeaders(MAX_HEADER_LINES + 1), "", ""].join("\r\n");
    expect(parseResponse(head)).toMatchObject({ ok: false, status: 502 });
  });
});

/** Feeds `pieces` to a new decoder and gathers what it returns, stopping at the first error. */
function decode(pieces: Buffer[]): { payload: Buffer; consumed: number; done: boolean; error: string | null } {
  const decoder = new ChunkedDecoder();
  const data: Buffer[] = [];
  let consumed = 0;
  let done = false;
  for (const piece of pieces) {
    const result = decoder.push(piece);
    if (!result.ok) return { payload: Buffer.concat(data), consumed, done, error: result.message };
    for (const part of result.data) {
      expect(part.length).toBeGreaterThan(0);
      data.push(part);
    }
    consumed += result.consumed;
    done = result.done;
  }
  return { payload: Buffer.concat(data), consumed, done, error: null };
}

function decodeText(body: string): ReturnType<typeof decode> {
  return decode([Buffer.from(body, "latin1")]);
}

describe("ChunkedDecoder accepts", () => {
  const cases: [string, string, string][] = [
    ["a single chunk", "5\r\nhello\r\n0\r\n\r\n", "hello"],
    ["several chunks", "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "abcde"],
    ["upper- and lower-case hex sizes", "A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij"],
    ["a size with leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello"],
    ["twelve size digits", "000000000003\r\nabc\r\n0\r\n\r\n", "abc"],
    ["an empty body", "0\r\n\r\n", ""],
    ["chunk extensions", "5;name=value;flag\r\nhello\r\n0;last=\"yes\"\r\n\r\n", "hello"],
    ["whitespace before an extension", "5 \t;ext\r\nhello\r\n0 ;x\r\n\r\n", "hello"],
    ["obs-text in an extension", "5;n=caf\xe9\r\nhello\r\n0\r\n\r\n", "hello"],
    ["trailer fields", "5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum:\tabc \r\n\r\n", "hello"],
    ["an empty trailer value", "1\r\nx\r\n0\r\nX:\r\n\r\n", "x"],
    ["CRLF bytes inside chunk data", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n"],
  ];

  for (const [name, body, payload] of cases) {
    test(name, () => {
      const result = decodeText(body);
      expect(result.error).toBeNull();
      expect(result.payload.toString("latin1")).toBe(payload);
      expect(result.done).toBe(true);
      expect(result.consumed).toBe(body.length);
    });
  }

  test("leaves the bytes of the next message unconsumed", () => {
    const decoder = new ChunkedDecoder();
    const input = Buffer.from("2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n");
    const result = decoder.push(input);
    expect(result).toMatchObject({ ok: true, consumed: 12, done: true });
    expect(decoder.done).toBe(true);
    expect(decoder.push(Buffer.from("more"))).toEqual({ ok: true, data: [], consumed: 0, done: true });
  });

  test("returns payload as subarrays of the input", () => {
    const input = Buffer.from("5\r\nhello\r\n0\r\n\r\n");
    const result = new ChunkedDecoder().push(input);
    if (!result.ok) throw new Error(result.message);
    expect(result.data).toHaveLength(1);
    expect(result.data[0]?.buffer).toBe(input.buffer);
    expect(result.data[0]?.byteOffset).toBe(input.byteOffset + 3);
  });

  test("reports not done for an incomplete body", () => {
    const result = decodeText("5\r\nhel");
    expect(result).toMatchObject({ done: false, consumed: 6, error: null });
    expect(result.payload.toString()).toBe("hel");
  });

  test("accepts a chunk-size line of exactly the maximum length", () => {
    const line = `1;${"e".repeat(4094)}`;
    expect(decodeText(`${line}\r\nx\r\n0\r\n\r\n`)).toMatchObject({ done: true, error: null });
  });

  test("accepts a trailer section of exactly the maximum length", () => {
    const field = `X: ${"v".repeat(16 * 1024 - 7)}\r\n`;
    expect(decodeText(`0\r\n${field}\r\n`)).toMatchObject({ done: true, error: null });
  });
});

describe("ChunkedDecoder rejects", () => {
  const cases: [string, string][] = [
    ["an empty chunk size", "\r\nhello\r\n0\r\n\r\n"],
    ["a non-hex chunk size", "g\r\n"],
    ["a 0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"],
    ["a signed chunk size", "+5\r\nhello\r\n0\r\n\r\n"],
    ["leading whitespace in the size line", " 5\r\nhello\r\n0\r\n\r\n"],
    ["whitespace after the size without an extension", "5 \r\nhello\r\n0\r\n\r\n"],
    ["thirteen size digits", "0000000000005\r\nhello\r\n0\r\n\r\n"],
    ["a bare LF after the size", "5\nhello\r\n0\r\n\r\n"],
    ["a bare CR after the size", "5\rhello\r\n0\r\n\r\n"],
    ["a control byte in an extension", "5;a\x01b\r\nhello\r\n0\r\n\r\n"],
    ["a bare LF ending an extension", "5;a\nhello\r\n0\r\n\r\n"],
    ["data longer than the chunk size", "3\r\nhello\r\n0\r\n\r\n"],
    ["data shorter than the chunk size", "6\r\nhello\r\n0\r\n\r\n"],
    ["a bare LF after chunk data", "5\r\nhello\n0\r\n\r\n"],
    ["a missing CRLF after chunk data", "5\r\nhello0\r\n\r\n"],
    ["a bare LF after the last chunk", "0\r\n\n"],
    ["obs-fold in the trailer", "0\r\nX: a\r\n b\r\n\r\n"],
    ["whitespace before a trailer colon", "0\r\nX : a\r\n\r\n"],
    ["a trailer line without a colon", "0\r\nX\r\n\r\n"],
    ["a trailer line without a name", "0\r\n: a\r\n\r\n"],
    ["a NUL in a trailer value", "0\r\nX: a\0\r\n\r\n"],
    ["a bare LF ending a trailer line", "0\r\nX: a\n\r\n"],
    ["a bare CR in a trailer value", "0\r\nX: a\rb\r\n\r\n"],
    ["a chunk-size line longer than the maximum", `1;${"e".repeat(4095)}\r\nx\r\n0\r\n\r\n`],
    ["a trailer section longer than the maximum", `0\r\nX: ${"v".repeat(16 * 1024 - 6)}\r\n\r\n`],
  ];

  for (const [name, body] of cases) {
    test(name, () => {
      expect(decodeText(body).error).toBeString();
    });
  }

  test("keeps returning the error after a failure", () => {
    const decoder = new ChunkedDecoder();
    const first = decoder.push(Buffer.from("x\r\n"));
    expect(first.ok).toBe(false);
    expect(decoder.push(Buffer.from("0\r\n\r\n"))).toEqual(first);
  });
});

describe("chunk encoding", () => {
  test("encodeChunk frames data with its hex length", () => {
    expect(encodeChunk(Buffer.alloc(26, "a")).toString()).toBe(`1a\r\n${"a".repeat(26)}\r\n`);
    expect(ChunkedDecoder.encodeChunk(Buffer.from("hello")).toString()).toBe("5\r\nhello\r\n");
  });

  test("encodeChunk returns nothing for empty data", () => {
    expect(ChunkedDecoder.encodeChunk(Buffer.alloc(0))).toHaveLength(0);
  });

  test("LAST_CHUNK ends a body", () => {
    expect(LAST_CHUNK.toString()).toBe("0\r\n\r\n");
    expect(decode([ChunkedDecoder.encodeChunk(Buffer.from("abc")), LAST_CHUNK])).toMatchObject({
      done: true,
      consumed: 13,
      error: null,
    });
  });
});

/** A chunked body made of random chunks, with random extensions and trailer fields. */
const chunkedBody = fc
  .record({
    chunks: fc.array(
      fc.record({
        data: fc.uint8Array({ minLength: 1, maxLength: 300 }),
        extension: fc.option(fc.stringMatching(/^;[a-z]{1,8}(=[a-z0-9]{0,8})?$/), { nil: undefined }),
        upperCase: fc.boolean(),
      }),
      { maxLength: 8 },
    ),
    trailers: fc.array(fc.stringMatching(/^[A-Za-z-]{1,10}: ?[ -~]{0,20}$/), { maxLength: 3 }),
    next: fc.uint8Array({ maxLength: 40 }),
  })
  .map(({ chunks, trailers, next }) => {
    const parts: Buffer[] = [];
    for (const chunk of chunks) {
      const size = chunk.data.length.toString(16);
      parts.push(Buffer.from(`${chunk.upperCase ? size.toUpperCase() : size}${chunk.extension ?? ""}\r\n`));
      parts.push(Buffer.from(chunk.data), Buffer.from("\r\n"));
    }
    parts.push(Buffer.from(`0\r\n${trailers.map((line) => `${line}\r\n`).join("")}\r\n`));
    const body = Buffer.concat(parts);
    const payload = Buffer.concat(chunks.map((chunk) => chunk.data));
    return { body, payload, wire: Buffer.concat([body, next]) };
  });

/** Splits `buffer` at the given fractions of its length. */
function splitAt(buffer: Buffer, fractions: number[]): Buffer[] {
  const cuts = [...new Set(fractions.map((fraction) => Math.floor(fraction * buffer.length)))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let start = 0;
  for (const cut of cuts) {
    pieces.push(buffer.subarray(start, cut));
    start = cut;
  }
  pieces.push(buffer.subarray(start));
  return pieces;
}

const fractions = fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { maxLength: 20 });

describe("ChunkedDecoder properties", () => {
  test("any split of a valid body yields the same payload and consumed count", () => {
    fc.assert(
      fc.property(chunkedBody, fractions, ({ body, payload, wire }, cuts) => {
        const result = decode(splitAt(wire, cuts));
        expect(result.error).toBeNull();
        expect(result.done).toBe(true);
        expect(result.consumed).toBe(body.length);
        expect(result.payload.equals(payload)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  test("corrupting the CRLF after chunk data always fails", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 100 }),
        fc.constantFrom(0, 1),
        fc.integer({ min: 0, max: 255 }),
        fractions,
        (data, offset, replacement, cuts) => {
          const body = Buffer.concat([ChunkedDecoder.encodeChunk(Buffer.from(data)), LAST_CHUNK]);
          const position = body.indexOf("\r\n") + 2 + data.length + offset;
          fc.pre(body[position] !== replacement);
          body[position] = replacement;
          expect(decode(splitAt(body, cuts)).error).toBeString();
        },
      ),
      { numRuns: 500 },
    );
  });
});

/** Returns `count` distinct header lines. */
function manyHeaders(count: number): string[] {
  return Array.from({ length: count }, (_, index) => `X-Header-${index}: ${index}`);
}

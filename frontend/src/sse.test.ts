import { describe, expect, it } from "vitest";
import { readEvents, SseParser } from "./sse";

describe("SseParser", () => {
  it("keeps a partial event until its blank line arrives", () => {
    const parser = new SseParser();
    expect(parser.push('event: token\ndata: {"text":"Hel')).toEqual([]);
    expect(parser.push('lo"}\n\nevent: done\r\ndata: {}\r\n\r\n')).toEqual([
      { event: "token", data: '{"text":"Hello"}' },
      { event: "done", data: "{}" },
    ]);
  });

  it("joins multi-line data and ignores comments", () => {
    expect(new SseParser().push(": keep-alive\n\ndata: a\ndata: b\n\n")).toEqual([{ event: "message", data: "a\nb" }]);
  });
});

describe("readEvents", () => {
  it("yields events split across arbitrary byte chunks, the last one without a trailing blank line", async () => {
    const text = 'event: token\ndata: {"text":"é"}\n\nevent: done\ndata: {"answer":"é"}';
    const bytes = new TextEncoder().encode(text);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 3) controller.enqueue(bytes.slice(i, i + 3));
        controller.close();
      },
    });
    const events = [];
    for await (const e of readEvents(body)) events.push(e);
    expect(events.map((e) => [e.event, JSON.parse(e.data)])).toEqual([
      ["token", { text: "é" }],
      ["done", { answer: "é" }],
    ]);
  });
});

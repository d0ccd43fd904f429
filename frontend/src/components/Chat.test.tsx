import { afterEach, describe, expect, it, vi } from "vitest";
import { render } from "preact";
import { act } from "preact/test-utils";
import { Chat } from "./Chat";

const user = { id: "u", username: "ann", role: "employee", groups: [] };
const encoder = new TextEncoder();

/** A fetch stand-in for the gateway: conversation list, then a chat stream we control. */
function gateway(onChat: (controller: ReadableStreamDefaultController<Uint8Array>, signal: AbortSignal) => void) {
  return vi.fn(async (url: string, init?: RequestInit) => {
    if (url === "/api/conversations") return new Response(JSON.stringify({ conversations: [] }));
    if (url === "/api/chat") {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          onChat(controller, init!.signal!);
          init!.signal!.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
        },
      });
      return new Response(body, { headers: { "Content-Type": "text/event-stream" } });
    }
    return new Response(JSON.stringify({ error: { code: "not_found", message: "no" } }), { status: 404 });
  });
}

async function settle() {
  for (let i = 0; i < 5; i++) await act(() => new Promise((r) => setTimeout(r, 0)));
}

async function ask(root: HTMLElement, question: string) {
  const box = root.querySelector<HTMLTextAreaElement>("textarea#question")!;
  box.value = question;
  await act(() => {
    root.querySelector("form.composer")!.dispatchEvent(new Event("submit", { cancelable: true }));
  });
  await settle();
}

afterEach(() => vi.unstubAllGlobals());

describe("Chat", () => {
  it("shows tokens as they stream, then the numbered source chips", async () => {
    let stream!: ReadableStreamDefaultController<Uint8Array>;
    vi.stubGlobal("fetch", gateway((c) => (stream = c)));
    const root = document.createElement("div");
    await act(() => render(<Chat user={user} />, root));
    await ask(root, "What is the bonus?");

    stream.enqueue(encoder.encode('event: token\ndata: {"text":"Up to "}\n\n'));
    await settle();
    expect(root.querySelector(".markdown")?.textContent?.trim()).toBe("Up to");
    expect(root.querySelector("button.danger")?.textContent).toContain("Stop");

    stream.enqueue(encoder.encode('event: token\ndata: {"text":"**3.85%** [1]"}\n\n'));
    stream.enqueue(encoder.encode('event: citations\ndata: {"citations":[{"document_id":"d","title":"Handbook","page":3,"section":null,"quote":"3.85%"}]}\n\n'));
    stream.enqueue(encoder.encode('event: done\ndata: {"conversation_id":"c1","message_id":"m1","answer":"Up to **3.85%** [1]"}\n\n'));
    stream.close();
    await settle();
    expect(root.querySelector(".markdown strong")?.textContent).toBe("3.85%");
    expect(root.querySelector(".chip")?.getAttribute("aria-label")).toBe("Source 1: Handbook, page 3");
    expect(root.querySelector("button.danger")).toBeNull();
    expect(location.hash).toBe("#/ask/c1");
  });

  it("Stop aborts the request and keeps what arrived", async () => {
    let signal!: AbortSignal;
    let stream!: ReadableStreamDefaultController<Uint8Array>;
    vi.stubGlobal("fetch", gateway((c, s) => ((stream = c), (signal = s))));
    const root = document.createElement("div");
    await act(() => render(<Chat user={user} />, root));
    await ask(root, "Tell me everything");
    stream.enqueue(encoder.encode('event: token\ndata: {"text":"Partial"}\n\n'));
    await settle();

    await act(() => root.querySelector<HTMLButtonElement>("button.danger")!.click());
    await settle();
    expect(signal.aborted).toBe(true);
    expect(root.textContent).toContain("Stopped.");
    expect(root.querySelector(".markdown")?.textContent?.trim()).toBe("Partial");
    expect(root.querySelector("button.primary[type=submit]")?.textContent).toContain("Ask");
  });
});

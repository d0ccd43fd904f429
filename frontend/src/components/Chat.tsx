// The portal's chat: history sidebar, the turns, the question box with streamed answers and a
// stop button, and the source panel of the chip last opened.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ApiError, getJson, send, type Citation, type Conversation, type ConversationSummary, type Source, type User } from "../api";
import { readEvents } from "../sse";
import { ConversationList } from "./ConversationList";
import { AnswerView, type Turn } from "./Answer";
import { CitationPanel } from "./CitationPanel";
import { Icon } from "../icons";

/** Stored messages (user, assistant, user, ...) as turns. */
export function turnsFrom(conversation: Conversation): Turn[] {
  const turns: Turn[] = [];
  for (const message of conversation.messages) {
    if (message.role === "user") {
      turns.push({ key: message.id, question: message.content, answer: "", citations: [], sources: [] });
    } else if (turns.length) {
      const last = turns[turns.length - 1]!;
      Object.assign(last, { answer: message.content, messageId: message.id, citations: message.citations ?? [] });
    }
  }
  return turns;
}

export function Chat({ conversationId }: { user: User; conversationId?: string }) {
  const [conversations, setConversations] = useState<ConversationSummary[] | null>(null);
  const [listError, setListError] = useState<string | null>(null);
  const [turns, setTurns] = useState<Turn[]>([]);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [opened, setOpened] = useState<{ citation: Citation; number: number; sources: Source[] } | null>(null);
  const [showHistory, setShowHistory] = useState(false);
  const abort = useRef<AbortController | null>(null);
  const streamedInto = useRef<string | null>(null);
  const box = useRef<HTMLTextAreaElement>(null);

  const refreshList = useCallback(() => {
    getJson<{ conversations: ConversationSummary[] }>("/api/conversations").then(
      (body) => { setConversations(body.conversations); setListError(null); },
      (exc) => setListError(`Could not load conversations: ${exc.message}`),
    );
  }, []);
  useEffect(refreshList, [refreshList]);

  useEffect(() => {
    setOpened(null);
    setLoadError(null);
    setShowHistory(false);
    if (!conversationId) { setTurns([]); return; }
    if (streamedInto.current === conversationId) { streamedInto.current = null; return; } // we just wrote it
    getJson<Conversation>(`/api/conversations/${encodeURIComponent(conversationId)}`).then(
      (c) => setTurns(turnsFrom(c)),
      (exc) => { setTurns([]); setLoadError(exc instanceof ApiError && exc.status === 404 ? "This conversation does not exist (any more)." : exc.message); },
    );
  }, [conversationId]);

  function update(key: string, change: Partial<Turn> | ((t: Turn) => Partial<Turn>)) {
    setTurns((all) => all.map((t) => (t.key === key ? { ...t, ...(typeof change === "function" ? change(t) : change) } : t)));
  }

  async function ask(question: string) {
    const key = `t${Date.now()}`;
    setTurns((all) => [...all, { key, question, answer: "", citations: [], sources: [], streaming: true }]);
    const controller = new AbortController();
    abort.current = controller;
    setBusy(true);
    try {
      const response = await send("/api/chat", {
        json: { message: question, conversation_id: conversationId ?? null, stream: true },
        signal: controller.signal,
      });
      for await (const event of readEvents(response.body!)) {
        const data = JSON.parse(event.data);
        if (event.event === "token") update(key, (t) => ({ answer: t.answer + data.text }));
        else if (event.event === "citations") update(key, { citations: data.citations ?? [], sources: data.sources ?? [] });
        else if (event.event === "error") update(key, { error: data.message ?? "The answer failed." });
        else if (event.event === "done") {
          update(key, { answer: data.answer ?? undefined, messageId: data.message_id, declined: !!data.declined });
          if (data.conversation_id && data.conversation_id !== conversationId) {
            streamedInto.current = data.conversation_id;
            location.hash = `#/ask/${encodeURIComponent(data.conversation_id)}`;
          }
          refreshList();
        }
      }
    } catch (exc) {
      if ((exc as Error).name === "AbortError") update(key, { stopped: true });
      else update(key, { error: (exc as Error).message });
    } finally {
      update(key, { streaming: false });
      abort.current = null;
      setBusy(false);
      box.current?.focus();
    }
  }

  function submit(event: Event) {
    event.preventDefault();
    const question = box.current?.value.trim() ?? "";
    if (!question || busy) return;
    box.current!.value = "";
    ask(question);
  }

  return (
    <div class={`chat ${opened ? "with-panel" : ""}`}>
      <button type="button" class="history-toggle" aria-expanded={showHistory} onClick={() => setShowHistory(!showHistory)}>
        <Icon name="menu" /> Conversations
      </button>
      <div class={`history-wrap ${showHistory ? "open" : ""}`}>
        <ConversationList conversations={conversations} currentId={conversationId} error={listError} onChanged={refreshList} />
      </div>
      <section class="conversation" aria-label="Conversation">
        <div class="turns" aria-live="polite">
          {loadError && <p class="error" role="alert">{loadError}</p>}
          {!turns.length && !loadError && (
            <div class="empty">
              <h1>Ask your company's documents</h1>
              <p class="muted">Answers come with numbered sources; open one to see the passage and the original page.</p>
            </div>
          )}
          {turns.map((turn) => (
            <AnswerView key={turn.key} turn={turn} onCite={(citation, number) => setOpened({ citation, number, sources: turn.sources })} />
          ))}
        </div>
        <form class="composer" onSubmit={submit}>
          <label for="question" class="sr-only">Ask a question</label>
          <textarea
            id="question"
            ref={box}
            rows={2}
            placeholder="Ask a question about your company's documents"
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey) submit(e);
            }}
          />
          {busy ? (
            <button type="button" class="danger" onClick={() => abort.current?.abort()}>
              <Icon name="stop" /> Stop
            </button>
          ) : (
            <button type="submit" class="primary">
              <Icon name="send" /> Ask
            </button>
          )}
        </form>
      </section>
      {opened && <CitationPanel {...opened} onClose={() => setOpened(null)} />}
    </div>
  );
}

// One turn of the chat: the question, the answer as sanitised Markdown, its numbered source
// chips, copy, and thumbs up/down with an optional comment.
import { useState } from "preact/hooks";
import { sendJson, type Citation, type Source } from "../api";
import { renderMarkdown } from "../markdown";
import { Icon } from "../icons";

export interface Turn {
  key: string;
  question: string;
  answer: string;
  messageId?: string;
  citations: Citation[];
  sources: Source[];
  declined?: boolean;
  streaming?: boolean;
  stopped?: boolean;
  error?: string;
}

export function chipLabel(citation: Citation, number: number): string {
  return `Source ${number}: ${citation.title}${citation.page ? `, page ${citation.page}` : ""}`;
}

// The chips of a turn: its citations; for a declined answer, the nearest sources it lists.
export function chipsFor(turn: Turn): Citation[] {
  if (turn.citations.length || !turn.declined) return turn.citations;
  return turn.sources.map((s) => ({ document_id: s.document_id, title: s.title, page: s.page, section: s.section, quote: s.text }));
}

export function AnswerView({ turn, onCite }: { turn: Turn; onCite: (citation: Citation, number: number) => void }) {
  const [copied, setCopied] = useState(false);
  const chips = chipsFor(turn);
  return (
    <article class="turn" aria-label={`Answer to: ${turn.question}`}>
      <div class="question"><p>{turn.question}</p></div>
      <div class="answer" aria-busy={turn.streaming ? "true" : "false"}>
        {turn.answer ? (
          <div class="markdown" dangerouslySetInnerHTML={{ __html: renderMarkdown(turn.answer) }} />
        ) : turn.streaming ? (
          <p class="muted thinking" role="status">Searching your documents and writing an answer…</p>
        ) : null}
        {turn.stopped && <p class="muted">Stopped.</p>}
        {turn.error && <p class="error" role="alert">{turn.error}</p>}
        {chips.length > 0 && (
          <div class="chips" role="list" aria-label="Sources">
            {chips.map((c, i) => (
              <button type="button" role="listitem" class="chip" key={i} aria-label={chipLabel(c, i + 1)} onClick={() => onCite(c, i + 1)}>
                <span class="chip-number">{i + 1}</span> {c.title}
                {c.page ? <span class="muted"> · p. {c.page}</span> : null}
              </button>
            ))}
          </div>
        )}
        {!turn.streaming && !turn.error && turn.answer && chips.length === 0 && (
          <p class="muted small">No source was cited for this answer: check it before relying on it.</p>
        )}
        {!turn.streaming && turn.answer && (
          <div class="answer-actions">
            <button
              type="button"
              class="icon-button"
              onClick={async () => {
                await copyText(turn.answer);
                setCopied(true);
                setTimeout(() => setCopied(false), 1500);
              }}
            >
              <Icon name="copy" /> {copied ? "Copied" : "Copy answer"}
            </button>
            {turn.messageId && <Feedback messageId={turn.messageId} />}
          </div>
        )}
      </div>
    </article>
  );
}

async function copyText(text: string): Promise<void> {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = Object.assign(document.createElement("textarea"), { value: text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}

function Feedback({ messageId }: { messageId: string }) {
  const [rating, setRating] = useState<"up" | "down" | null>(null);
  const [state, setState] = useState<"idle" | "commenting" | "saved" | string>("idle");

  async function rate(value: "up" | "down", comment?: string) {
    try {
      await sendJson("/api/feedback", "POST", { message_id: messageId, rating: value, comment: comment ?? null });
      setRating(value);
      setState(comment === undefined ? "commenting" : "saved");
    } catch (exc) {
      setState(`error:${(exc as Error).message}`);
    }
  }

  return (
    <span class="feedback">
      <button type="button" class="icon-button" aria-pressed={rating === "up"} aria-label="Helpful" title="Helpful" onClick={() => rate("up")}>
        <Icon name="up" />
      </button>
      <button type="button" class="icon-button" aria-pressed={rating === "down"} aria-label="Not helpful" title="Not helpful" onClick={() => rate("down")}>
        <Icon name="down" />
      </button>
      {state === "commenting" && rating && (
        <form
          class="comment"
          onSubmit={(e) => {
            e.preventDefault();
            rate(rating, String(new FormData(e.currentTarget as HTMLFormElement).get("comment") ?? ""));
          }}
        >
          <label for={`comment-${messageId}`}>Comment (optional)</label>
          <input id={`comment-${messageId}`} name="comment" maxLength={2000} />
          <button type="submit">Send feedback</button>
        </form>
      )}
      {state === "saved" && <span class="muted small" role="status">Thanks for the feedback.</span>}
      {state.startsWith("error:") && <span class="error small" role="alert">{state.slice(6)}</span>}
    </span>
  );
}

// The history sidebar: the caller's conversations, with rename, delete and Markdown export.
import { useState } from "preact/hooks";
import { send, sendJson, type ConversationSummary } from "../api";
import { go } from "../route";
import { Icon } from "../icons";

interface Props {
  conversations: ConversationSummary[] | null;
  currentId?: string;
  error: string | null;
  onChanged: () => void;
}

export function ConversationList({ conversations, currentId, error, onChanged }: Props) {
  const [editing, setEditing] = useState<string | null>(null);
  const [problem, setProblem] = useState<string | null>(null);

  async function rename(id: string, title: string) {
    setEditing(null);
    if (!title.trim()) return;
    try {
      await sendJson(`/api/conversations/${encodeURIComponent(id)}`, "PATCH", { title });
      onChanged();
    } catch (exc) {
      setProblem((exc as Error).message);
    }
  }

  async function remove(conversation: ConversationSummary) {
    if (!confirm(`Delete the conversation “${conversation.title}”? This cannot be undone.`)) return;
    try {
      await send(`/api/conversations/${encodeURIComponent(conversation.id)}`, { method: "DELETE" });
      if (conversation.id === currentId) go("ask");
      onChanged();
    } catch (exc) {
      setProblem((exc as Error).message);
    }
  }

  return (
    <nav class="history" aria-label="Conversations">
      <button type="button" class="primary wide" onClick={() => go("ask")}>
        <Icon name="plus" /> New conversation
      </button>
      {error && <p class="error" role="alert">{error}</p>}
      {problem && <p class="error" role="alert">{problem}</p>}
      {conversations === null && !error && <p class="muted" role="status">Loading conversations…</p>}
      {conversations?.length === 0 && <p class="muted">No conversations yet. Ask a question to start one.</p>}
      <ul>
        {conversations?.map((c) => (
          <li key={c.id} class={c.id === currentId ? "current" : ""}>
            {editing === c.id ? (
              <form
                class="rename"
                onSubmit={(e) => {
                  e.preventDefault();
                  rename(c.id, String(new FormData(e.currentTarget as HTMLFormElement).get("title") ?? ""));
                }}
              >
                <label class="sr-only" for={`title-${c.id}`}>New title</label>
                <input
                  id={`title-${c.id}`}
                  name="title"
                  defaultValue={c.title}
                  autoFocus
                  maxLength={500}
                  onKeyDown={(e) => e.key === "Escape" && setEditing(null)}
                />
                <button type="submit">Save</button>
              </form>
            ) : (
              <a href={`#/ask/${encodeURIComponent(c.id)}`} aria-current={c.id === currentId ? "page" : undefined}>
                {c.title}
              </a>
            )}
            <span class="row-actions">
              <button type="button" class="icon-button" aria-label={`Rename ${c.title}`} title="Rename" onClick={() => setEditing(c.id)}>
                <Icon name="edit" />
              </button>
              <a class="icon-button" href={`/api/conversations/${encodeURIComponent(c.id)}/export`} download aria-label={`Export ${c.title} as Markdown`} title="Export as Markdown">
                <Icon name="download" />
              </a>
              <button type="button" class="icon-button" aria-label={`Delete ${c.title}`} title="Delete" onClick={() => remove(c)}>
                <Icon name="trash" />
              </button>
            </span>
          </li>
        ))}
      </ul>
    </nav>
  );
}

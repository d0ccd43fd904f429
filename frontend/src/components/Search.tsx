// Search-only mode: the passages the caller may read that match a query, no model involved.
import { useState } from "preact/hooks";
import { sendJson, type SearchResult } from "../api";
import { highlightTerms } from "../markdown";
import { viewerHref } from "../route";

export function Search() {
  const [results, setResults] = useState<SearchResult[] | null>(null);
  const [query, setQuery] = useState("");
  const [state, setState] = useState<"idle" | "loading" | string>("idle");

  async function submit(event: Event) {
    event.preventDefault();
    const text = String(new FormData(event.currentTarget as HTMLFormElement).get("query") ?? "").trim();
    if (!text) return;
    setQuery(text);
    setState("loading");
    try {
      setResults((await sendJson<{ results: SearchResult[] }>("/api/search", "POST", { query: text, k: 20 })).results);
      setState("idle");
    } catch (exc) {
      setState((exc as Error).message);
    }
  }

  return (
    <section class="page" aria-labelledby="search-title">
      <h1 id="search-title">Search passages</h1>
      <form class="inline-form" role="search" onSubmit={submit}>
        <label for="search-query">Search the documents</label>
        <input id="search-query" name="query" type="search" required />
        <button type="submit" class="primary">Search</button>
      </form>
      {state === "loading" && <p class="muted" role="status">Searching…</p>}
      {state !== "idle" && state !== "loading" && <p class="error" role="alert">{state}</p>}
      {results?.length === 0 && state === "idle" && <p class="muted">No passage you may read matches “{query}”.</p>}
      <ol class="results">
        {results?.map((r, i) => (
          <li key={i} class="card">
            <h2>
              {r.title}
              <span class="muted"> {r.page ? `· page ${r.page}` : ""} {r.section ? `· ${r.section}` : ""}</span>
            </h2>
            <p class="passage" dangerouslySetInnerHTML={{ __html: highlightTerms(r.text, query) }} />
            <a href={viewerHref(r.document_id, r.page)} target="_blank" rel="noopener">Open the original</a>
          </li>
        ))}
      </ol>
    </section>
  );
}

// The side panel a citation chip opens: title, page, the passage with the quoted words
// highlighted, and a link that opens the original at that page.
import { useEffect, useRef, useState } from "preact/hooks";
import { getJson, type Citation, type DocumentRow, type Source } from "../api";
import { highlightQuote, escapeHtml } from "../markdown";
import { viewerHref } from "../route";
import { Icon } from "../icons";

/** The prompt's passage this citation quotes (same document and page, holding the quote), if known. */
export function passageFor(citation: Citation, sources: Source[]): string {
  const flat = (s: string) => s.replace(/\s+/g, " ").toLowerCase();
  const quote = flat(citation.quote ?? "");
  const sameDoc = sources.filter((s) => s.document_id === citation.document_id && (citation.page == null || s.page === citation.page));
  return (sameDoc.find((s) => quote && flat(s.text).includes(quote)) ?? sameDoc[0])?.text ?? citation.quote ?? "";
}

interface Props {
  citation: Citation;
  number: number;
  sources: Source[];
  onClose: () => void;
}

export function CitationPanel({ citation, number, sources, onClose }: Props) {
  const [doc, setDoc] = useState<DocumentRow | null | "gone">(null);
  const heading = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    heading.current?.focus();
    setDoc(null);
    getJson<DocumentRow>(`/api/documents/${encodeURIComponent(citation.document_id)}`).then(setDoc, () => setDoc("gone"));
  }, [citation]);

  const passage = passageFor(citation, sources);
  const html = passage === citation.quote ? `<mark>${escapeHtml(passage)}</mark>` : highlightQuote(passage, citation.quote ?? "");
  const isPdf = doc && doc !== "gone" && doc.extension.toLowerCase() === ".pdf";

  return (
    <aside class="citation-panel" aria-labelledby="citation-title" onKeyDown={(e) => e.key === "Escape" && onClose()}>
      <div class="panel-head">
        <h2 id="citation-title" tabIndex={-1} ref={heading}>
          <span class="chip-number">{number}</span> {citation.title}
        </h2>
        <button type="button" class="icon-button" aria-label="Close source" onClick={onClose}>
          <Icon name="close" />
        </button>
      </div>
      <p class="muted">
        {citation.page ? `Page ${citation.page}` : "Page not known"}
        {citation.section ? ` · ${citation.section}` : ""}
      </p>
      <blockquote class="passage" dangerouslySetInnerHTML={{ __html: html }} />
      {doc === null && <p class="muted" role="status">Checking the original…</p>}
      {doc === "gone" && <p class="muted">The original document is no longer available.</p>}
      {isPdf && (
        <a class="button primary" href={viewerHref(citation.document_id, citation.page)} target="_blank" rel="noopener">
          Open the original at page {citation.page ?? 1}
        </a>
      )}
      {doc && doc !== "gone" && !isPdf && (
        <a class="button primary" href={`/api/documents/${encodeURIComponent(citation.document_id)}/file`} download>
          Download the original ({doc.filename})
        </a>
      )}
    </aside>
  );
}

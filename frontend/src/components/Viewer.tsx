// The original document at a page, drawn by pdf.js (bundled, with its worker; loaded only
// when a source is opened). The PDF comes from /api/documents/{id}/file with the session
// cookie, so only a caller who may read the document sees it.
import { useEffect, useRef, useState } from "preact/hooks";
import * as pdfjs from "pdfjs-dist";
import workerUrl from "pdfjs-dist/build/pdf.worker.min.mjs?url";
import { getJson, type DocumentRow } from "../api";
import { viewerHref } from "../route";

pdfjs.GlobalWorkerOptions.workerSrc = workerUrl;

type PdfDocument = Awaited<ReturnType<typeof pdfjs.getDocument>["promise"]>;

export default function Viewer({ documentId, page }: { documentId: string; page: number }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const [pdf, setPdf] = useState<PdfDocument | null>(null);
  const [meta, setMeta] = useState<DocumentRow | null>(null);
  const [state, setState] = useState<"loading" | "ready" | string>("loading");

  useEffect(() => {
    let cancelled = false;
    const fileUrl = `/api/documents/${encodeURIComponent(documentId)}/file`;
    getJson<DocumentRow>(`/api/documents/${encodeURIComponent(documentId)}`)
      .then((doc) => {
        if (cancelled) return;
        setMeta(doc);
        if (doc.extension.toLowerCase() !== ".pdf") {
          setState("This document is not a PDF: use Download to open it.");
          return;
        }
        return pdfjs.getDocument({ url: fileUrl, withCredentials: true, isEvalSupported: false }).promise.then((loaded) => {
          if (!cancelled) setPdf(loaded);
        });
      })
      .catch(() => !cancelled && setState("This document does not exist or you may not read it."));
    return () => { cancelled = true; };
  }, [documentId]);

  useEffect(() => {
    if (!pdf || !canvas.current) return;
    let task: { cancel: () => void } | null = null;
    const shown = Math.min(Math.max(page, 1), pdf.numPages);
    pdf.getPage(shown).then((p) => {
      const ratio = window.devicePixelRatio || 1;
      const width = Math.min(canvas.current!.parentElement!.clientWidth, 900);
      const viewport = p.getViewport({ scale: (width / p.getViewport({ scale: 1 }).width) * ratio });
      const target = canvas.current!;
      target.width = viewport.width;
      target.height = viewport.height;
      target.style.width = `${viewport.width / ratio}px`;
      const render = p.render({ canvas: target, canvasContext: target.getContext("2d")!, viewport } as never);
      task = render;
      render.promise.then(() => setState("ready"), () => undefined);
    });
    return () => task?.cancel();
  }, [pdf, page]);

  const shown = pdf ? Math.min(Math.max(page, 1), pdf.numPages) : page;
  return (
    <main class="viewer" aria-labelledby="viewer-title">
      <header class="viewer-bar">
        <h1 id="viewer-title">{meta?.title ?? "Document"}</h1>
        {pdf && (
          <nav aria-label="Pages">
            <a class="button" aria-disabled={shown <= 1} href={viewerHref(documentId, Math.max(shown - 1, 1))}>Previous page</a>
            <span class="page-label" aria-live="polite">Page {shown} of {pdf.numPages}</span>
            <a class="button" aria-disabled={shown >= pdf.numPages} href={viewerHref(documentId, Math.min(shown + 1, pdf.numPages))}>Next page</a>
          </nav>
        )}
        <a class="button" href={`/api/documents/${encodeURIComponent(documentId)}/file`} download>Download</a>
      </header>
      {state !== "ready" && state !== "loading" && <p class="error" role="alert">{state}</p>}
      {state === "loading" && <p class="muted" role="status">Loading the document…</p>}
      <div class="page-frame">
        <canvas ref={canvas} aria-label={`Page ${shown} of ${meta?.title ?? "the document"}`} role="img" data-state={state} />
      </div>
    </main>
  );
}

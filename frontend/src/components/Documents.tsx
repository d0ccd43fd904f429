// Document admin (admins and editors): drag-and-drop upload of many files with per-file
// progress, and the document table (search, sort, open, delete).
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { ApiError, getJson, send, sendJson, type DocumentRow, type User } from "../api";
import { followJob, uploadFile, type UploadState } from "../upload";
import { viewerHref } from "../route";
import { Icon } from "../icons";

type SortKey = "title" | "status" | "chunk_count" | "uploaded_by" | "created_at";

export function sortDocuments(rows: DocumentRow[], key: SortKey, ascending: boolean): DocumentRow[] {
  const sign = ascending ? 1 : -1;
  return [...rows].sort((a, b) => {
    const x = a[key] ?? "";
    const y = b[key] ?? "";
    return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * sign;
  });
}

export function Documents({ user }: { user: User }) {
  const [documents, setDocuments] = useState<DocumentRow[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [uploads, setUploads] = useState<Record<string, UploadState>>({});
  const [filter, setFilter] = useState("");
  const [sort, setSort] = useState<{ key: SortKey; ascending: boolean }>({ key: "created_at", ascending: false });
  const [dragging, setDragging] = useState(false);
  const [groups, setGroups] = useState("");
  const [editingGroups, setEditingGroups] = useState<string | null>(null);

  const refresh = useCallback(() => {
    getJson<{ documents: DocumentRow[] }>("/api/documents").then(
      (body) => { setDocuments(body.documents); setError(null); },
      (exc) => setError(`Could not load documents: ${exc.message}`),
    );
  }, []);
  useEffect(refresh, [refresh]);

  function track(name: string, state: Partial<UploadState>) {
    setUploads((all) => ({ ...all, [name]: { ...(all[name] ?? { phase: "uploading", progress: 0 }), ...state } }));
  }

  async function uploadOne(file: File) {
    const name = file.name;
    track(name, { phase: "uploading", progress: 0, message: null });
    try {
      const body = await uploadFile(file, groups, (f) => track(name, { progress: f }));
      if (body.duplicate) {
        track(name, { phase: "duplicate", progress: 1, documentId: body.document_id, message: "Already uploaded" });
      } else if (body.job_id) {
        track(name, { phase: "queued", progress: 0, documentId: body.document_id });
        const job = await followJob(body.job_id, (j) => track(name, { phase: j.state, progress: j.progress, stage: j.stage, message: j.error }));
        track(name, { phase: job.state, progress: job.state === "done" ? 1 : job.progress });
      }
    } catch (exc) {
      track(name, { phase: "failed", message: (exc as Error).message });
    }
    refresh();
  }

  function uploadAll(files: FileList | File[] | null) {
    const list = Array.from(files ?? []);
    list.forEach((f) => track(f.name, { phase: "uploading", progress: 0 }));
    // Two at a time: many files stream in without flooding the gateway.
    let next = 0;
    const worker = async () => { while (next < list.length) await uploadOne(list[next++]!); };
    Promise.all([worker(), worker()]);
  }

  async function changeGroups(doc: DocumentRow, raw: string) {
    setEditingGroups(null);
    const wanted = raw.split(",").map((g) => g.trim()).filter(Boolean);
    try {
      // PUT /api/documents/{id}/groups {groups}: one job rewrites every chunk's ACL (docs/access.md).
      const body = await sendJson<{ job_id?: string }>(`/api/documents/${encodeURIComponent(doc.id)}/groups`, "PUT", { groups: wanted });
      if (body.job_id) await followJob(body.job_id, () => undefined);
      refresh();
    } catch (exc) {
      setError(exc instanceof ApiError && exc.unavailable ? "Changing a document's groups is not available on this server." : (exc as Error).message);
    }
  }

  async function remove(doc: DocumentRow) {
    if (!confirm(`Delete “${doc.title}” and every passage of it from the search index?`)) return;
    try {
      await send(`/api/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
      refresh();
      setTimeout(refresh, 1500);
    } catch (exc) {
      setError((exc as Error).message);
    }
  }

  const shown = useMemo(() => {
    const needle = filter.trim().toLowerCase();
    const rows = (documents ?? []).filter((d) => !needle || `${d.title} ${d.filename} ${d.groups.join(" ")} ${d.uploaded_by ?? ""}`.toLowerCase().includes(needle));
    return sortDocuments(rows, sort.key, sort.ascending);
  }, [documents, filter, sort]);
  const hasPages = documents?.some((d) => d.pages != null || d.page_count != null);

  const header = (key: SortKey, label: string) => (
    <th scope="col" aria-sort={sort.key === key ? (sort.ascending ? "ascending" : "descending") : "none"}>
      <button type="button" class="sort" onClick={() => setSort({ key, ascending: sort.key === key ? !sort.ascending : true })}>
        {label}
      </button>
    </th>
  );

  return (
    <section class="page" aria-labelledby="documents-title">
      <h1 id="documents-title">Documents</h1>
      <div
        class={`dropzone ${dragging ? "dragging" : ""}`}
        onDragOver={(e) => { e.preventDefault(); setDragging(true); }}
        onDragLeave={() => setDragging(false)}
        onDrop={(e) => { e.preventDefault(); setDragging(false); uploadAll(e.dataTransfer?.files ?? null); }}
      >
        <Icon name="upload" />
        <p>Drop files here, or</p>
        <label class="button primary" for="upload-input">Upload documents</label>
        <input id="upload-input" class="visually-hidden-file" type="file" multiple aria-label="Upload documents" onChange={(e) => { uploadAll((e.currentTarget as HTMLInputElement).files); (e.currentTarget as HTMLInputElement).value = ""; }} />
        <label for="upload-groups">Readable by groups (comma-separated; empty: everyone)</label>
        <input id="upload-groups" value={groups} onInput={(e) => setGroups((e.currentTarget as HTMLInputElement).value)} placeholder={user.groups.join(", ") || "e.g. hr, legal"} />
      </div>
      {Object.keys(uploads).length > 0 && (
        <ul class="uploads" aria-label="Uploads">
          {Object.entries(uploads).map(([name, u]) => (
            <li key={name} class={`upload ${u.phase}`} data-phase={u.phase}>
              <span class="upload-name">{name}</span>
              <progress max={1} value={u.phase === "done" || u.phase === "duplicate" ? 1 : u.progress} aria-label={`${name} progress`} />
              <span class="upload-phase" role="status">
                {u.phase === "uploading" && `Uploading ${Math.round(u.progress * 100)}%`}
                {u.phase === "queued" && "Queued"}
                {u.phase === "running" && `${u.stage ?? "Processing"} ${Math.round(u.progress * 100)}%`}
                {u.phase === "done" && "Ready"}
                {u.phase === "duplicate" && "Already uploaded"}
                {u.phase === "failed" && `Failed: ${u.message ?? "unknown error"}`}
              </span>
            </li>
          ))}
        </ul>
      )}
      <div class="table-tools">
        <label for="doc-filter">Filter documents</label>
        <input id="doc-filter" type="search" value={filter} onInput={(e) => setFilter((e.currentTarget as HTMLInputElement).value)} />
        <button type="button" onClick={refresh}>Refresh</button>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {documents === null && !error && <p class="muted" role="status">Loading documents…</p>}
      {documents?.length === 0 && <p class="muted">No documents yet. Upload some above.</p>}
      {documents && documents.length > 0 && (
        <div class="table-wrap">
          <table>
            <caption class="sr-only">Documents, sortable by column</caption>
            <thead>
              <tr>
                {header("title", "Title")}
                {header("status", "Status")}
                {hasPages && <th scope="col">Pages</th>}
                {header("chunk_count", "Chunks")}
                <th scope="col">Groups</th>
                {header("uploaded_by", "Uploaded by")}
                {header("created_at", "Date")}
                <th scope="col"><span class="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {shown.map((d) => (
                <tr key={d.id}>
                  <td>
                    <a href={d.extension === ".pdf" ? viewerHref(d.id, 1) : `/api/documents/${encodeURIComponent(d.id)}/file`} target="_blank" rel="noopener">{d.title}</a>
                    <div class="muted small">{d.filename}</div>
                  </td>
                  <td><span class={`status ${d.status}`} title={d.error ?? ""}>{d.status}</span></td>
                  {hasPages && <td>{d.pages ?? d.page_count ?? "—"}</td>}
                  <td>{d.chunk_count}</td>
                  <td>
                    {editingGroups === d.id ? (
                      <form class="rename" onSubmit={(e) => { e.preventDefault(); changeGroups(d, String(new FormData(e.currentTarget as HTMLFormElement).get("groups") ?? "")); }}>
                        <label class="sr-only" for={`groups-${d.id}`}>Groups of {d.title}</label>
                        <input id={`groups-${d.id}`} name="groups" defaultValue={d.groups.join(", ")} autoFocus onKeyDown={(e) => e.key === "Escape" && setEditingGroups(null)} />
                        <button type="submit">Save</button>
                      </form>
                    ) : (
                      <>
                        {d.groups.length ? d.groups.join(", ") : <span class="muted">everyone</span>}
                        <button type="button" class="icon-button" aria-label={`Change groups of ${d.title}`} title="Change groups" onClick={() => setEditingGroups(d.id)}>
                          <Icon name="edit" />
                        </button>
                      </>
                    )}
                  </td>
                  <td>{d.uploaded_by ?? "—"}</td>
                  <td><time dateTime={d.created_at}>{new Date(d.created_at).toLocaleString()}</time></td>
                  <td>
                    <button type="button" class="icon-button" aria-label={`Delete ${d.title}`} onClick={() => remove(d)} disabled={d.status === "deleting"}>
                      <Icon name="trash" />
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

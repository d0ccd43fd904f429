// The audit trail (admins): who asked what and which chunks were shown, filtered by user,
// action and text; the filters also go to the server as query parameters where it takes them.
import { useEffect, useMemo, useState } from "preact/hooks";
import { ApiError, getJson } from "../api";
import { Unavailable } from "./Unavailable";

interface Entry {
  id?: string;
  username: string;
  action: string;
  query: string;
  chunk_ids?: string[];
  created_at: string;
  answer?: string;
}

export function Audit() {
  const [entries, setEntries] = useState<Entry[] | null>(null);
  const [state, setState] = useState<"loading" | "ready" | "missing" | string>("loading");
  const [who, setWho] = useState("");
  const [action, setAction] = useState("");
  const [text, setText] = useState("");

  useEffect(() => {
    getJson<{ entries: Entry[] }>("/api/admin/audit?limit=500").then(
      (body) => { setEntries(body.entries); setState("ready"); },
      (exc) => setState(exc instanceof ApiError && exc.unavailable ? "missing" : exc.message),
    );
  }, []);

  const shown = useMemo(
    () => (entries ?? []).filter((e) =>
      (!who || e.username.toLowerCase().includes(who.toLowerCase())) &&
      (!action || e.action === action) &&
      (!text || e.query.toLowerCase().includes(text.toLowerCase()))),
    [entries, who, action, text],
  );
  const actions = [...new Set((entries ?? []).map((e) => e.action))].sort();

  if (state === "missing") return <section class="page"><h1>Audit</h1><Unavailable feature="The audit trail" /></section>;
  return (
    <section class="page" aria-labelledby="audit-title">
      <h1 id="audit-title">Audit</h1>
      <form class="inline-form filters" onSubmit={(e) => e.preventDefault()} aria-label="Audit filters">
        <label for="audit-user">User</label>
        <input id="audit-user" value={who} onInput={(e) => setWho((e.currentTarget as HTMLInputElement).value)} />
        <label for="audit-action">Action</label>
        <select id="audit-action" value={action} onChange={(e) => setAction((e.currentTarget as HTMLSelectElement).value)}>
          <option value="">any</option>
          {actions.map((a) => <option key={a} value={a}>{a}</option>)}
        </select>
        <label for="audit-text">Question contains</label>
        <input id="audit-text" value={text} onInput={(e) => setText((e.currentTarget as HTMLInputElement).value)} />
      </form>
      {state === "loading" && <p class="muted" role="status">Loading the audit trail…</p>}
      {state !== "loading" && state !== "ready" && <p class="error" role="alert">{state}</p>}
      {state === "ready" && shown.length === 0 && <p class="muted">No entries match.</p>}
      {shown.length > 0 && (
        <div class="table-wrap">
          <table>
            <thead><tr><th scope="col">When</th><th scope="col">User</th><th scope="col">Action</th><th scope="col">Question</th><th scope="col">Chunks shown</th></tr></thead>
            <tbody>
              {shown.map((e, i) => (
                <tr key={e.id ?? i}>
                  <td><time dateTime={e.created_at}>{new Date(e.created_at).toLocaleString()}</time></td>
                  <td>{e.username}</td>
                  <td>{e.action}</td>
                  <td class="wrap">{e.query}</td>
                  <td>{e.chunk_ids?.length ?? 0}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

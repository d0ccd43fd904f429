// Drafting (admins and editors): pick a template, fill its fields, preview each clause with
// its source, download the DOCX. Shows "not available" where the gateway has no drafting API.
import { useEffect, useState } from "preact/hooks";
import { ApiError, getJson, requestHeaders } from "../api";
import { Unavailable } from "./Unavailable";

interface Field {
  name: string;
  type: "text" | "date" | "int" | "choice";
  required: boolean;
  choices?: string[];
}
interface Template {
  template_id?: string;
  id?: string;
  name?: string;
  version?: number;
  fields?: Field[];
}
interface Clause {
  name: string;
  source: string;
  changed: boolean;
  diff?: string;
}
interface DraftResult {
  draft_id: string;
  report: { clauses: Clause[] };
}

const templateId = (t: Template) => t.template_id ?? t.id ?? "";

export function Drafts() {
  const [templates, setTemplates] = useState<Template[] | null>(null);
  const [state, setState] = useState<"loading" | "ready" | "missing" | string>("loading");
  const [chosen, setChosen] = useState<Template | null>(null);
  const [problems, setProblems] = useState<{ field: string; message: string }[]>([]);
  const [result, setResult] = useState<DraftResult | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    getJson<{ templates: Template[] }>("/api/templates").then(
      (body) => { setTemplates(body.templates ?? []); setState("ready"); },
      (exc) => setState(exc instanceof ApiError && exc.unavailable ? "missing" : exc.message),
    );
  }, []);

  async function pick(id: string) {
    setResult(null);
    setProblems([]);
    if (!id) return setChosen(null);
    try {
      setChosen(await getJson<Template>(`/api/templates/${encodeURIComponent(id)}`));
    } catch (exc) {
      setState((exc as Error).message);
    }
  }

  async function generate(event: Event) {
    event.preventDefault();
    if (!chosen) return;
    const form = new FormData(event.currentTarget as HTMLFormElement);
    const fields: Record<string, string | number> = {};
    for (const f of chosen.fields ?? []) {
      const value = String(form.get(`field-${f.name}`) ?? "");
      if (value !== "") fields[f.name] = f.type === "int" ? Number(value) : value;
    }
    setBusy(true);
    setProblems([]);
    try {
      const response = await fetch("/api/drafts", {
        method: "POST",
        credentials: "same-origin",
        headers: requestHeaders("POST", true),
        body: JSON.stringify({ template_id: templateId(chosen), fields, instructions: form.get("instructions") || null }),
      });
      const body = await response.json();
      if (response.status === 422) setProblems(body.error?.problems ?? [{ field: "", message: body.error?.message }]);
      else if (!response.ok) setProblems([{ field: "", message: body.error?.message ?? response.statusText }]);
      else setResult(body);
    } finally {
      setBusy(false);
    }
  }

  if (state === "missing") return <section class="page"><h1>Drafts</h1><Unavailable feature="Drafting" /></section>;
  return (
    <section class="page" aria-labelledby="drafts-title">
      <h1 id="drafts-title">Draft from a template</h1>
      {state === "loading" && <p class="muted" role="status">Loading templates…</p>}
      {state !== "loading" && state !== "ready" && <p class="error" role="alert">{state}</p>}
      {templates?.length === 0 && <p class="muted">No templates yet.</p>}
      {templates && templates.length > 0 && (
        <div class="stacked">
          <label for="template">Template</label>
          <select id="template" onChange={(e) => pick((e.currentTarget as HTMLSelectElement).value)}>
            <option value="">Choose a template…</option>
            {templates.map((t) => <option key={templateId(t)} value={templateId(t)}>{t.name ?? templateId(t)}{t.version ? ` (v${t.version})` : ""}</option>)}
          </select>
        </div>
      )}
      {chosen && (
        <form class="card stacked" onSubmit={generate}>
          {(chosen.fields ?? []).map((f) => {
            const problem = problems.find((p) => p.field === f.name);
            const id = `field-${f.name}`;
            return (
              <div key={f.name} class="field">
                <label for={id}>{f.name.replace(/_/g, " ")}{f.required ? " (required)" : ""}</label>
                {f.type === "choice" ? (
                  <select id={id} name={id} required={f.required} aria-invalid={!!problem}>
                    <option value="">—</option>
                    {(f.choices ?? []).map((c) => <option key={c}>{c}</option>)}
                  </select>
                ) : (
                  <input id={id} name={id} type={f.type === "date" ? "date" : f.type === "int" ? "number" : "text"} required={f.required} aria-invalid={!!problem} />
                )}
                {problem && <p class="error small">{problem.message}</p>}
              </div>
            );
          })}
          <label for="instructions">Instructions (optional)</label>
          <textarea id="instructions" name="instructions" rows={3} placeholder="e.g. add a non-solicitation clause, 12 months" />
          {problems.filter((p) => !(chosen.fields ?? []).some((f) => f.name === p.field)).map((p, i) => <p key={i} class="error" role="alert">{p.message}</p>)}
          <button type="submit" class="primary" disabled={busy}>{busy ? "Drafting…" : "Draft"}</button>
        </form>
      )}
      {result && (
        <div class="card">
          <h2>Clauses</h2>
          <ol class="clauses">
            {result.report.clauses.map((c) => (
              <li key={c.name}>
                <strong>{c.name}</strong> <span class="muted">from {c.source}</span> {c.changed ? <span class="status running">changed</span> : <span class="status ready">as in the template</span>}
                {c.changed && c.diff && <pre class="diff">{c.diff}</pre>}
              </li>
            ))}
          </ol>
          <a class="button primary" href={`/api/drafts/${encodeURIComponent(result.draft_id)}.docx`} download>Download DOCX</a>
        </div>
      )}
    </section>
  );
}


// Enclave's minimal web page: sign in, upload documents with progress, ask with streamed, cited answers.
// Talks only to the gateway API (DESIGN.md); the full web app is its own issue.
"use strict";

const state = { token: sessionStorage.getItem("enclave_token"), conversationId: null };

function $(id) { return document.getElementById(id); }

async function api(path, options = {}) {
  const headers = options.headers || {};
  if (state.token) headers["Authorization"] = `Bearer ${state.token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && path !== "/api/auth/login") { signOut(); }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function signOut() {
  state.token = null;
  sessionStorage.removeItem("enclave_token");
  $("app-panel").hidden = true;
  $("login-panel").hidden = false;
  $("logout").hidden = true;
  $("who").textContent = "";
}

async function showApp() {
  const me = await (await api("/api/me")).json();
  $("who").textContent = `${me.username} (${me.role})`;
  $("login-panel").hidden = true;
  $("app-panel").hidden = false;
  $("logout").hidden = false;
  await refreshDocuments();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const form = new FormData(event.target);
  try {
    const response = await api("/api/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
    });
    state.token = (await response.json()).token;
    sessionStorage.setItem("enclave_token", state.token);
    await showApp();
  } catch (error) { $("login-error").textContent = error.message; }
});

$("logout").addEventListener("click", signOut);

async function refreshDocuments() {
  const body = await (await api("/api/documents")).json();
  const list = $("documents");
  list.replaceChildren();
  for (const doc of body.documents || body) {
    const item = document.createElement("li");
    item.textContent = `${doc.title || doc.filename} — ${doc.status}`;
    const remove = document.createElement("button");
    remove.textContent = "Delete";
    remove.addEventListener("click", async () => {
      await api(`/api/documents/${doc.id || doc.document_id}`, { method: "DELETE" });
      await refreshDocuments();
    });
    item.append(remove);
    list.append(item);
  }
}

async function followJob(jobId, label) {
  const row = document.createElement("div");
  row.className = "job";
  const text = document.createElement("span");
  const bar = document.createElement("progress");
  bar.max = 1;
  row.append(text, bar);
  $("jobs").prepend(row);
  for (;;) {
    const job = await (await api(`/api/jobs/${jobId}`)).json();
    bar.value = job.progress || 0;
    text.textContent = `${label}: ${job.state}${job.error ? " — " + job.error : ""}`;
    if (job.state === "done" || job.state === "failed") break;
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
  await refreshDocuments();
}

$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("upload-error").textContent = "";
  const form = new FormData(event.target);
  try {
    const response = await api("/api/documents", { method: "POST", body: form });
    const body = await response.json();
    if (body.duplicate) { $("upload-error").textContent = "Already uploaded (same content)."; return; }
    event.target.reset();
    followJob(body.job_id, form.get("file").name);
  } catch (error) { $("upload-error").textContent = error.message; }
});

$("new-conversation").addEventListener("click", () => {
  state.conversationId = null;
  $("conversation").replaceChildren();
});

function renderCitations(container, citations) {
  const list = document.createElement("ol");
  list.className = "citations";
  for (const c of citations) {
    const item = document.createElement("li");
    const where = [c.title, c.page ? `page ${c.page}` : null, c.section].filter(Boolean).join(", ");
    item.textContent = where + " ";
    if (c.quote) { const quote = document.createElement("q"); quote.textContent = c.quote; item.append(quote); }
    list.append(item);
  }
  container.append(list);
}

// Parse a text/event-stream body into {event, data} records as they arrive.
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const record = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of record.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      yield { event, data };
    }
  }
}

$("ask-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = new FormData(event.target).get("message");
  const turn = document.createElement("div");
  turn.className = "turn";
  const question = document.createElement("div");
  question.className = "question";
  question.textContent = message;
  const answer = document.createElement("div");
  answer.className = "answer";
  turn.append(question, answer);
  $("conversation").append(turn);
  event.target.reset();
  try {
    const response = await api("/api/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
      body: JSON.stringify({ message, conversation_id: state.conversationId, stream: true }),
    });
    for await (const { event: name, data } of readEvents(response)) {
      const payload = data ? JSON.parse(data) : {};
      if (name === "token") answer.textContent += payload.text ?? payload.token ?? "";
      else if (name === "citations") renderCitations(turn, payload.citations || payload);
      else if (name === "done") {
        state.conversationId = payload.conversation_id || state.conversationId;
        // the shown answer replaces the streamed text: markers removed, or the decline
        if (typeof payload.answer === "string") answer.textContent = payload.answer;
      }
      else if (name === "error") answer.textContent += `\n[error: ${payload.message}]`;
    }
  } catch (error) { answer.textContent = `Error: ${error.message}`; }
});

if (state.token) showApp().catch(signOut);

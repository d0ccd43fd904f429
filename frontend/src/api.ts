// The gateway API client: the only way the web app talks to anything.
// Sessions ride on the httpOnly cookie the login sets (no token in storage a script could read);
// unsafe methods echo the `enclave_csrf` cookie in `X-CSRF-Token` when the gateway sets one.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
  /** The endpoint does not exist on this gateway (a feature not deployed): show "not available". */
  get unavailable(): boolean {
    return (this.status === 404 && this.message.startsWith("not found: ")) || this.status === 405;
  }
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export function cookieValue(name: string, cookies: string = document.cookie): string | null {
  for (const part of cookies.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

/** Headers for a request: CSRF echo on unsafe methods, JSON content type when a body is JSON. */
export function requestHeaders(method: string, json: boolean, cookies?: string): Record<string, string> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (json) headers["Content-Type"] = "application/json";
  const csrf = UNSAFE.has(method.toUpperCase()) ? cookieValue("enclave_csrf", cookies) : null;
  if (csrf) headers["X-CSRF-Token"] = csrf;
  return headers;
}

type Listener = () => void;
const unauthorizedListeners = new Set<Listener>();
/** Called whenever the gateway answers 401 (expired or revoked session): the app shows sign-in. */
export function onUnauthorized(listener: Listener): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export async function errorFrom(response: Response): Promise<ApiError> {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    code = body?.error?.code ?? code;
    message = body?.error?.message ?? message;
  } catch {
    /* not JSON */
  }
  return new ApiError(response.status, code, message);
}

export async function send(
  path: string,
  options: { method?: string; json?: unknown; body?: BodyInit; signal?: AbortSignal } = {},
): Promise<Response> {
  const method = options.method ?? (options.json !== undefined || options.body ? "POST" : "GET");
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: requestHeaders(method, options.json !== undefined),
    body: options.json !== undefined ? JSON.stringify(options.json) : options.body,
    signal: options.signal,
  });
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && path !== "/api/auth/login") unauthorizedListeners.forEach((l) => l());
    throw error;
  }
  return response;
}

export async function getJson<T>(path: string): Promise<T> {
  return (await send(path)).json() as Promise<T>;
}

export async function sendJson<T>(path: string, method: string, json?: unknown): Promise<T> {
  return (await send(path, { method, json: json ?? {} })).json() as Promise<T>;
}

// --- shapes of the gateway's answers (DESIGN.md contract) -----------------------------------

export interface User {
  id: string;
  username: string;
  role: "admin" | "editor" | "employee" | string;
  groups: string[];
  disabled?: boolean;
}

export interface Citation {
  document_id: string;
  title: string;
  page: number | null;
  section: string | null;
  quote: string;
}

export interface Source {
  document_id: string;
  title: string;
  page: number | null;
  section: string | null;
  text: string;
}

export interface StoredMessage {
  id: string;
  role: "user" | "assistant";
  content: string;
  citations: Citation[];
  created_at: string;
}

export interface ConversationSummary {
  id: string;
  title: string;
  created_at: string;
}

export interface Conversation extends ConversationSummary {
  messages: StoredMessage[];
}

export interface SearchResult {
  document_id: string;
  title: string;
  page: number | null;
  section: string | null;
  text: string;
  score: number;
}

export interface DocumentRow {
  id: string;
  filename: string;
  title: string;
  extension: string;
  size: number;
  groups: string[];
  status: string;
  chunk_count: number;
  error: string | null;
  uploaded_by?: string | null;
  pages?: number | null;
  page_count?: number | null;
  created_at: string;
}

export interface Job {
  id: string;
  state: "queued" | "running" | "done" | "failed";
  progress: number;
  stage: string | null;
  error: string | null;
}

export const isManager = (user: User) => user.role === "admin" || user.role === "editor";
export const isAdmin = (user: User) => user.role === "admin";

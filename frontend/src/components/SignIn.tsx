// The sign-in form: username and password to /api/auth/login; the session is the cookie it sets.
import { useState } from "preact/hooks";
import { ApiError, sendJson, type User } from "../api";

export function SignIn({ onSignedIn, notice }: { onSignedIn: (user: User) => void; notice?: string }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: Event) {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    setBusy(true);
    setError(null);
    try {
      const body = await sendJson<{ user: User }>("/api/auth/login", "POST", {
        username: String(form.get("username") ?? ""),
        password: String(form.get("password") ?? ""),
      });
      onSignedIn(body.user);
    } catch (exc) {
      setError(exc instanceof ApiError && exc.status === 401 ? "Wrong username or password." : String((exc as Error).message));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="signin">
      <form class="card" onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">
          <span class="brand-mark" aria-hidden="true">E</span> Enclave
        </h1>
        <p class="muted">Answers from your company's own documents, with their sources.</p>
        {notice && <p class="notice" role="status">{notice}</p>}
        <label for="username">Username</label>
        <input id="username" name="username" autocomplete="username" required autoFocus />
        <label for="password">Password</label>
        <input id="password" name="password" type="password" autocomplete="current-password" required />
        <button type="submit" class="primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}

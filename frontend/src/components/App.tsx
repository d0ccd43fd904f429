// The shell: who is signed in, the screens their role may use, sign out (which ends the session).
import { useEffect, useRef, useState } from "preact/hooks";
import { lazy, Suspense } from "preact/compat";
import { getJson, isAdmin, isManager, onUnauthorized, send, type User } from "../api";
import { go, useRoute } from "../route";
import { SignIn } from "./SignIn";
import { Chat } from "./Chat";
import { Search } from "./Search";
import { Documents } from "./Documents";
import { People } from "./People";
import { Audit } from "./Audit";
import { Drafts } from "./Drafts";

const Viewer = lazy(() => import("./Viewer"));

interface Screen {
  id: string;
  label: string;
  allowed: (user: User) => boolean;
}

const SCREENS: Screen[] = [
  { id: "ask", label: "Ask", allowed: () => true },
  { id: "search", label: "Search", allowed: () => true },
  { id: "drafts", label: "Drafts", allowed: isManager },
  { id: "documents", label: "Documents", allowed: isManager },
  { id: "people", label: "Users & groups", allowed: isAdmin },
  { id: "audit", label: "Audit", allowed: isAdmin },
];

export function App() {
  const [user, setUser] = useState<User | null | undefined>(undefined);
  const [notice, setNotice] = useState<string | undefined>();
  const route = useRoute();
  const signedIn = useRef(false);
  signedIn.current = !!user;

  useEffect(() => {
    getJson<User>("/api/me").then(setUser, () => setUser(null));
    return onUnauthorized(() => {
      // Only a session that was working has "ended"; a first visit just shows the form.
      if (signedIn.current) setNotice("Your session has ended. Please sign in again.");
      setUser(null);
    });
  }, []);

  async function signOut() {
    try {
      await send("/api/auth/logout", { method: "POST" });
    } finally {
      setUser(null);
      setNotice("You are signed out.");
      go("ask");
    }
  }

  if (user === undefined) return <p class="loading" role="status">Loading…</p>;
  if (user === null) return <SignIn notice={notice} onSignedIn={(u) => { setNotice(undefined); setUser(u); }} />;

  if (route.screen === "view") {
    return (
      <Suspense fallback={<p class="loading" role="status">Opening document…</p>}>
        <Viewer documentId={route.params[0] ?? ""} page={Number(route.params[1] ?? 1) || 1} />
      </Suspense>
    );
  }

  const screens = SCREENS.filter((s) => s.allowed(user));
  const current = screens.find((s) => s.id === route.screen) ?? screens[0]!;
  return (
    <div class="shell">
      <a class="skip" href="#main">Skip to content</a>
      <header class="topbar">
        <span class="brand"><span class="brand-mark" aria-hidden="true">E</span> Enclave</span>
        <nav aria-label="Screens">
          {screens.map((s) => (
            <a href={`#/${s.id}`} aria-current={s.id === current.id ? "page" : undefined} key={s.id}>
              {s.label}
            </a>
          ))}
        </nav>
        <span class="who" title={user.groups.length ? `Groups: ${user.groups.join(", ")}` : "No groups"}>
          {user.username} <span class="role">{user.role}</span>
        </span>
        <button type="button" onClick={signOut}>Sign out</button>
      </header>
      <div id="main" class="screen" tabIndex={-1}>
        {current.id === "ask" && <Chat user={user} conversationId={route.params[0]} />}
        {current.id === "search" && <Search />}
        {current.id === "documents" && <Documents user={user} />}
        {current.id === "people" && <People />}
        {current.id === "audit" && <Audit />}
        {current.id === "drafts" && <Drafts />}
      </div>
    </div>
  );
}

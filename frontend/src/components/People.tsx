// Users and groups (admins): list and create; per-user changes where the gateway offers them.
import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError, getJson, sendJson, type User } from "../api";
import { Unavailable } from "./Unavailable";

interface Group {
  id?: string;
  name: string;
}

export function People() {
  const [users, setUsers] = useState<User[] | null>(null);
  const [groups, setGroups] = useState<Group[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [missing, setMissing] = useState(false);
  const [message, setMessage] = useState<string | null>(null);

  const refresh = useCallback(() => {
    Promise.all([getJson<{ users: User[] }>("/api/admin/users"), getJson<{ groups: Group[] }>("/api/admin/groups")]).then(
      ([u, g]) => { setUsers(u.users); setGroups(g.groups); setError(null); },
      (exc) => (exc instanceof ApiError && exc.unavailable ? setMissing(true) : setError(exc.message)),
    );
  }, []);
  useEffect(refresh, [refresh]);

  async function create(event: Event, path: string, body: (form: FormData) => unknown, done: string) {
    event.preventDefault();
    const formElement = event.currentTarget as HTMLFormElement;
    setMessage(null);
    try {
      await sendJson(path, "POST", body(new FormData(formElement)));
      formElement.reset();
      setMessage(done);
      refresh();
    } catch (exc) {
      setError((exc as Error).message);
    }
  }

  if (missing) return <section class="page"><h1>Users &amp; groups</h1><Unavailable feature="User administration" /></section>;
  return (
    <section class="page" aria-labelledby="people-title">
      <h1 id="people-title">Users &amp; groups</h1>
      {error && <p class="error" role="alert">{error}</p>}
      {message && <p class="notice" role="status">{message}</p>}
      <div class="two-columns">
        <div class="card">
          <h2>Users</h2>
          {users === null ? <p class="muted" role="status">Loading users…</p> : (
            <div class="table-wrap">
              <table>
                <thead><tr><th scope="col">Username</th><th scope="col">Role</th><th scope="col">Groups</th></tr></thead>
                <tbody>
                  {users.map((u) => (
                    <tr key={u.id ?? u.username}>
                      <td>{u.username}{u.disabled ? <span class="muted"> (disabled)</span> : null}</td>
                      <td>{u.role}</td>
                      <td>{u.groups?.length ? u.groups.join(", ") : <span class="muted">none</span>}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          <form class="stacked" onSubmit={(e) => create(e, "/api/admin/users", (f) => ({
            username: f.get("username"),
            password: f.get("password"),
            role: f.get("role"),
            groups: String(f.get("groups") ?? "").split(",").map((s) => s.trim()).filter(Boolean),
          }), "User created.")}>
            <h3>Add a user</h3>
            <label for="new-username">New username</label>
            <input id="new-username" name="username" required autocomplete="off" />
            <label for="new-password">Initial password</label>
            <input id="new-password" name="password" type="password" required autocomplete="new-password" />
            <label for="new-role">Role</label>
            <select id="new-role" name="role">
              <option value="employee">employee</option>
              <option value="editor">editor</option>
              <option value="admin">admin</option>
            </select>
            <label for="new-groups">Groups (comma-separated)</label>
            <input id="new-groups" name="groups" placeholder={groups?.map((g) => g.name).slice(0, 3).join(", ")} />
            <button type="submit" class="primary">Add user</button>
          </form>
        </div>
        <div class="card">
          <h2>Groups</h2>
          {groups === null ? <p class="muted" role="status">Loading groups…</p> : groups.length === 0 ? <p class="muted">No groups yet.</p> : (
            <ul class="tags">{groups.map((g) => <li key={g.name}>{g.name}</li>)}</ul>
          )}
          <form class="stacked" onSubmit={(e) => create(e, "/api/admin/groups", (f) => ({ name: f.get("name") }), "Group created.")}>
            <label for="new-group">New group name</label>
            <input id="new-group" name="name" required maxLength={100} />
            <button type="submit" class="primary">Add group</button>
          </form>
        </div>
      </div>
    </section>
  );
}

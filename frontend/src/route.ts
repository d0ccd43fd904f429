// Hash routes: #/ask[/conversation], #/search, #/documents, #/people, #/audit, #/drafts,
// #/view/<document id>/<page>. A hash keeps every screen a static file the gateway serves.
import { useEffect, useState } from "preact/hooks";

export interface Route {
  screen: string;
  params: string[];
}

export function parseRoute(hash: string): Route {
  const [screen = "ask", ...params] = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { screen, params };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const update = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", update);
    return () => removeEventListener("hashchange", update);
  }, []);
  return route;
}

export function go(path: string): void {
  location.hash = `#/${path}`;
}

/** The in-app viewer's address for a document at a page. */
export function viewerHref(documentId: string, page: number | null): string {
  return `#/view/${encodeURIComponent(documentId)}/${page ?? 1}`;
}

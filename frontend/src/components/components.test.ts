import { describe, expect, it } from "vitest";
import { turnsFrom } from "./Chat";
import { passageFor } from "./CitationPanel";
import { sortDocuments } from "./Documents";
import type { Citation, DocumentRow } from "../api";

const citation: Citation = { document_id: "d1", title: "Handbook", page: 3, section: null, quote: "bonus of 10%" };

describe("turnsFrom", () => {
  it("pairs stored questions with their answers and citations", () => {
    const turns = turnsFrom({
      id: "c", title: "t", created_at: "",
      messages: [
        { id: "m1", role: "user", content: "Q1", citations: [], created_at: "" },
        { id: "m2", role: "assistant", content: "A1", citations: [citation], created_at: "" },
        { id: "m3", role: "user", content: "Q2", citations: [], created_at: "" },
      ],
    });
    expect(turns.map((t) => [t.question, t.answer, t.messageId, t.citations.length])).toEqual([
      ["Q1", "A1", "m2", 1],
      ["Q2", "", undefined, 0],
    ]);
  });
});

describe("passageFor", () => {
  it("picks the source on the cited page that holds the quote", () => {
    const sources = [
      { document_id: "d1", title: "Handbook", page: 2, section: null, text: "bonus of 10% (old)" },
      { document_id: "d1", title: "Handbook", page: 3, section: null, text: "intro" },
      { document_id: "d1", title: "Handbook", page: 3, section: null, text: "Level 5 staff get a bonus   of 10%." },
    ];
    expect(passageFor(citation, sources)).toBe("Level 5 staff get a bonus   of 10%.");
  });

  it("falls back to the quote when the sources are not known (a stored conversation)", () => {
    expect(passageFor(citation, [])).toBe("bonus of 10%");
  });
});

describe("sortDocuments", () => {
  const row = (title: string, chunk_count: number): DocumentRow => ({
    id: title, filename: title, title, extension: ".md", size: 1, groups: [], status: "ready", chunk_count, error: null, created_at: "",
  });
  it("sorts numbers numerically and text alphabetically, both ways", () => {
    const rows = [row("b", 10), row("a", 9), row("c", 100)];
    expect(sortDocuments(rows, "chunk_count", true).map((r) => r.chunk_count)).toEqual([9, 10, 100]);
    expect(sortDocuments(rows, "title", false).map((r) => r.title)).toEqual(["c", "b", "a"]);
  });
});

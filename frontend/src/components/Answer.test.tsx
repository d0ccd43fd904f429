import { describe, expect, it } from "vitest";
import { chipsFor, type Turn } from "./Answer";

const source = { document_id: "d1", title: "Handbook", page: 3, section: null, text: "A bonus of 10% is paid." };
const base: Turn = { key: "k", question: "Q", answer: "A", citations: [], sources: [source] };

describe("chipsFor", () => {
  it("shows the citations of an answered turn", () => {
    const citation = { document_id: "d1", title: "Handbook", page: 3, section: null, quote: "bonus of 10%" };
    expect(chipsFor({ ...base, citations: [citation] })).toEqual([citation]);
  });
  it("lists the nearest sources of a declined answer as chips", () => {
    expect(chipsFor({ ...base, declined: true })).toEqual([
      { document_id: "d1", title: "Handbook", page: 3, section: null, quote: "A bonus of 10% is paid." },
    ]);
  });
  it("shows no chip for an answer that cited nothing and was not declined", () => {
    expect(chipsFor(base)).toEqual([]);
  });
});

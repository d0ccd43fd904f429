import { describe, expect, it } from "vitest";
import { escapeHtml, highlightQuote, highlightTerms, renderMarkdown } from "./markdown";

function dom(html: string): HTMLElement {
  const div = document.createElement("div");
  div.innerHTML = html;
  return div;
}

describe("renderMarkdown", () => {
  it("renders formatting, lists and tables", () => {
    const root = dom(renderMarkdown("**bold** and *it*\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |"));
    expect(root.querySelector("strong")?.textContent).toBe("bold");
    expect(root.querySelectorAll("li")).toHaveLength(2);
    expect(root.querySelector("td")?.textContent).toBe("1");
  });

  it("shows raw HTML and scripts as text, never as elements", () => {
    const root = dom(renderMarkdown('Hi <script>window.pwned=1</script> <b onclick="x()">b</b> <iframe src="//evil"></iframe>'));
    expect(root.querySelector("script, iframe, [onclick]")).toBeNull();
    expect(root.textContent).toContain("<script>window.pwned=1</script>");
  });

  it("never loads an image: Markdown, reference-style and HTML images become their alt text", () => {
    const markdown = "![tracker](http://evil.example/p.png)\n\n![ref][r]\n\n[r]: http://evil.example/r.png\n\n<img src=x onerror=alert(1)>";
    const html = renderMarkdown(markdown);
    const root = dom(html);
    expect(root.querySelector("img, [src], [onerror]")).toBeNull();
    expect(html).not.toContain("evil.example/p.png\"");
    expect(root.textContent).toContain("[image: tracker]");
  });

  it("drops javascript: links and opens the others in a new tab without a referrer", () => {
    const root = dom(renderMarkdown("[a](javascript:alert(1)) [b](https://intranet.example/x) [c](data:text/html,hi)"));
    const links = [...root.querySelectorAll("a")];
    expect(links.map((a) => a.getAttribute("href"))).toEqual([null, "https://intranet.example/x", null]);
    expect(links[1]!.getAttribute("rel")).toContain("noreferrer");
  });
});

describe("highlighting", () => {
  it("marks the quote in the passage, across different whitespace, and escapes the rest", () => {
    const html = highlightQuote("Level 5 <staff>\nget a  bonus of 10%.", "get a bonus");
    expect(html).toBe("Level 5 &lt;staff&gt;\n<mark>get a  bonus</mark> of 10%.");
  });

  it("falls back to the escaped text when the quote is not there", () => {
    expect(highlightQuote("<a>", "zzz")).toBe(escapeHtml("<a>"));
  });

  it("marks query words of three letters or more in search results", () => {
    expect(highlightTerms("The bonus is paid <yearly>", "bonus of")).toBe("The <mark>bonus</mark> is paid &lt;yearly&gt;");
  });
});

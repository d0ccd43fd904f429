// Answers and passages as Markdown, made inert: whatever a document or the model writes
// (HTML, <script>, event handlers, javascript: links, images that would call a server)
// becomes text or is dropped. marked renders, DOMPurify sanitises, and images never load:
// an image becomes its alt text, so no Markdown trick can make the browser fetch a URL.

import DOMPurify from "dompurify";
import { Marked } from "marked";

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    // Raw HTML in Markdown is shown as text, never parsed as markup.
    html({ text }) {
      return escapeHtml(text);
    },
    image({ text }) {
      return `<span class="md-image">[image: ${escapeHtml(text || "no description")}]</span>`;
    },
  },
});

const FORBID_TAGS = ["img", "image", "picture", "source", "video", "audio", "iframe", "object", "embed", "style", "link", "meta", "form", "input", "button", "svg", "math", "base"];

let hooked = false;
function purifier(): typeof DOMPurify {
  if (!hooked) {
    DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        const href = node.getAttribute("href") ?? "";
        if (!/^(https?:|mailto:|#|\/(?!\/))/i.test(href)) node.removeAttribute("href");
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer nofollow");
      }
    });
    hooked = true;
  }
  return DOMPurify;
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** Safe HTML for ``markdown``: only text formatting, tables, code and plain links survive. */
export function renderMarkdown(markdown: string): string {
  const html = marked.parse(markdown) as string;
  return purifier().sanitize(html, {
    FORBID_TAGS,
    FORBID_ATTR: ["style", "srcset", "src", "action", "formaction", "background", "poster"],
    ALLOW_DATA_ATTR: false,
  });
}

/** ``text`` as HTML with ``quote`` (whitespace-insensitive) wrapped in <mark>; escaped throughout. */
export function highlightQuote(text: string, quote: string): string {
  const words = quote.trim().split(/\s+/).filter(Boolean);
  if (!words.length) return escapeHtml(text);
  const pattern = new RegExp(words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("\\s+"), "i");
  const match = pattern.exec(text);
  if (!match) return escapeHtml(text);
  const before = text.slice(0, match.index);
  const after = text.slice(match.index + match[0].length);
  return `${escapeHtml(before)}<mark>${escapeHtml(match[0])}</mark>${escapeHtml(after)}`;
}

/** ``text`` escaped, with each query word of 3+ letters wrapped in <mark> (search results). */
export function highlightTerms(text: string, query: string): string {
  const words = [...new Set(query.toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) ?? [])];
  if (!words.length) return escapeHtml(text);
  const pattern = new RegExp(`(${words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})`, "giu");
  return text
    .split(pattern)
    .map((part, i) => (i % 2 ? `<mark>${escapeHtml(part)}</mark>` : escapeHtml(part)))
    .join("");
}

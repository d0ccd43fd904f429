"""E-mail messages (.eml): subject as title, a header line, then the body's paragraphs.

The plain-text part is preferred; an HTML-only message is reduced to text through
unstructured's HTML partitioner (so its headings and lists survive). Attachments are
named in one line (their content is not parsed: a user uploads them on their own).
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from ingest.raw_elements import RawElement, body, heading


def partition_eml(path: Path) -> list[RawElement]:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    out: list[RawElement] = []
    subject = " ".join(str(message.get("Subject", "")).split())
    if subject:
        out.append(heading(subject, 0))
    header = "; ".join(
        f"{name}: {' '.join(str(message[name]).split())}"
        for name in ("From", "To", "Cc", "Date")
        if message.get(name)
    )
    if header:
        out.append(body(header))
    part = message.get_body(preferencelist=("plain", "html"))
    if part is not None:
        content = part.get_content()
        if part.get_content_type() == "text/html":
            out.extend(_html_elements(content))
        else:
            out.extend(body(p) for p in _paragraphs(content))
    names = [name for a in message.iter_attachments() if (name := a.get_filename())]
    if names:
        out.append(body("Attachments: " + ", ".join(names)))
    return out


def _paragraphs(text: str) -> list[str]:
    blocks = text.replace("\r\n", "\n").split("\n\n")
    return [b.strip() for b in blocks if b.strip()]


def _html_elements(html: str) -> list[RawElement]:
    from unstructured.partition.html import partition_html

    return [
        body(el.text, None, getattr(el, "category", "NarrativeText"))
        for el in partition_html(text=html)
        if (el.text or "").strip()
    ]

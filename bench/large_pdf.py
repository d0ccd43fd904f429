"""Parsing a large PDF: throughput and peak memory, windowed (ours) against whole-file (peer).

Generates a PDF of ``--pages`` pages (reportlab: a heading, four paragraphs and a ruled
table per page), then parses and chunks it in a fresh child process per mode so each
peak RSS (``ru_maxrss`` of that child) is its own:

- ``ours``: ``ingest.parse.parse_document`` (16-page windows, tables as rows, OCR check);
- ``naive``: unstructured's ``partition_pdf(strategy="fast")`` over the whole file at
  once, which is what ingest.parse did before windows.

Embedding is left out: it costs the same per chunk in both modes and would hide the
parser's difference. The modes alternate (naive, ours, naive, ours) and the best of two
is reported, so a busy machine slows both alike. Writes bench/results/large_pdf.json.

Usage: python bench/large_pdf.py [--pages 500] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, path = sys.argv[1], Path(sys.argv[2])
started = time.perf_counter()
if mode == "ours":
    from ingest.chunking import chunk_elements
    from ingest.parse import parse_document
    parsed = parse_document(path)
    chunks = chunk_elements(parsed.elements, document_id="big", title="big")
    pages, count = len({e.page for e in parsed.elements}), len(chunks)
else:
    from ingest.offline import ensure_offline
    from unstructured.partition.pdf import partition_pdf
    ensure_offline()
    raw = partition_pdf(filename=str(path), strategy="fast", languages=["eng"],
                        infer_table_structure=False)
    pages, count = len({el.metadata.page_number for el in raw}), len(raw)
print(json.dumps({"seconds": time.perf_counter() - started, "pages": pages, "items": count,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_large_pdf(path: Path, pages: int) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table, TableStyle

    styles = getSampleStyleSheet()
    story: list = []
    for n in range(1, pages + 1):
        story.append(Paragraph(f"Section {n}: policy area {n % 37}", styles["Heading2"]))
        for p in range(4):
            story.append(
                Paragraph(
                    f"Paragraph {p} of page {n}. Teammates in region {n % 11} may claim up to "
                    f"{(n * 7 + p) % 900 + 100} dollars for item {p} each quarter, with a receipt "
                    "for anything over twenty-five dollars and approval from their manager. " * 2,
                    styles["Normal"],
                )
            )
        table = Table([["Item", "Limit", "Approver"], [f"Item {n}", f"{n % 500} USD", "Finance"]])
        table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, "black")]))
        story.extend([table, PageBreak()])
    SimpleDocTemplate(str(path), pagesize=A4).build(story)


def run_child(mode: str, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "UNSTRUCTURED_DISABLE_NOTICE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "large_pdf.json")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="enclave-bigpdf-") as tmp:
        path = Path(tmp) / "big.pdf"
        make_large_pdf(path, args.pages)
        size_mb = path.stat().st_size / 1e6
        runs: dict[str, list[dict]] = {"naive": [], "ours": []}
        for _ in range(args.repeats):
            for mode in ("naive", "ours"):
                runs[mode].append(run_child(mode, path))
                print(mode, runs[mode][-1], flush=True)
    best = {mode: min(r, key=lambda x: x["seconds"]) for mode, r in runs.items()}
    result = {
        "benchmark": f"parse+chunk a generated {args.pages}-page PDF, child process per mode",
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "pdf_mb": round(size_mb, 1),
        "ours": {
            **best["ours"],
            "pages_per_s": round(args.pages / best["ours"]["seconds"], 2),
            "peak_rss_mb_all_runs": max(r["peak_rss_mb"] for r in runs["ours"]),
        },
        "naive": {
            **best["naive"],
            "pages_per_s": round(args.pages / best["naive"]["seconds"], 2),
            "peak_rss_mb_all_runs": max(r["peak_rss_mb"] for r in runs["naive"]),
        },
        "parent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Parsing a large PDF: throughput and peak memory, windowed (ours) against whole-file (peer).

Generates a PDF of ``--pages`` pages (reportlab: a heading, four paragraphs and a ruled
table per page), then parses and chunks it in a fresh child process per mode so each
peak RSS (``ru_maxrss`` of that child) is its own:

- ``ours``: ``ingest.parse.parse_document`` (16-page windows, tables as rows, OCR check);
- ``naive``: unstructured's ``partition_pdf(strategy="fast")`` over the whole file at
  once, which is what ingest.parse did before windows.

Embedding is left out: it costs the same per chunk in both modes and would hide the
parser's difference. The modes alternate (naive, ours, naive, ours) and the best of two
is reported, so a busy machine slows both alike. ``seconds`` counts the child's imports
too; ``parse_seconds`` only the parse (and, for ours, the chunking).

Memory growth: each child also reports its peak RSS after imports; the same pair runs
once more on a ``--small-pages`` file and on both sizes with a photo-like image per page
(``--image-px``, file bytes grow ~150 KB a page), so ``memory_growth`` shows whether a
mode's peak follows the file. Writes bench/results/large_pdf.json.

Usage: python bench/large_pdf.py [--pages 500] [--small-pages 100] [--image-px 200] [--out PATH]
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
from ingest.offline import ensure_offline
ensure_offline()
if mode == "ours":
    from ingest.chunking import chunk_elements
    from ingest.parse import parse_document
    from ingest.parse_pdf import preload
    preload()
else:
    from unstructured.partition.pdf import partition_pdf
imported = time.perf_counter()
import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if mode == "ours":
    parsed = parse_document(path)
    chunks = chunk_elements(parsed.elements, document_id="big", title="big")
    pages, count = len({e.page for e in parsed.elements}), len(chunks)
else:
    raw = partition_pdf(filename=str(path), strategy="fast", languages=["eng"],
                        infer_table_structure=False)
    pages, count = len({el.metadata.page_number for el in raw}), len(raw)
done = time.perf_counter()
print(json.dumps({"seconds": done - started, "parse_seconds": done - imported, "pages": pages,
                  "items": count, "import_rss_mb": import_rss,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_large_pdf(path: Path, pages: int, image_px: int = 0) -> None:
    """Write the test file; ``image_px`` > 0 adds a photo-like (incompressible) image of
    that many pixels square to every page, so the file's bytes grow as real reports do."""
    import io
    import random

    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import (
        Image,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Table,
        TableStyle,
    )

    styles = getSampleStyleSheet()
    noise = random.Random(0)
    story: list = []
    for n in range(1, pages + 1):
        story.append(Paragraph(f"Section {n}: policy area {n % 37}", styles["Heading2"]))
        if image_px:
            from PIL import Image as PILImage

            photo = io.BytesIO()
            PILImage.frombytes(
                "RGB", (image_px, image_px), noise.randbytes(3 * image_px * image_px)
            ).save(photo, format="PNG")
            photo.seek(0)
            story.append(Image(photo, width=120, height=120))
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


def _summary(runs: list[dict], pages: int) -> dict:
    best = min(runs, key=lambda x: x["seconds"])
    return {
        **best,
        "pages_per_s": round(pages / best["seconds"], 2),
        "parse_pages_per_s": round(pages / best["parse_seconds"], 2),
        "peak_rss_mb_all_runs": max(r["peak_rss_mb"] for r in runs),
    }


def measure(tmp: Path, pages: int, image_px: int, repeats: int) -> dict:
    """Both modes on one generated file, alternating, best of ``repeats``."""
    path = tmp / f"big-{pages}-{image_px}.pdf"
    make_large_pdf(path, pages, image_px)
    runs: dict[str, list[dict]] = {"naive": [], "ours": []}
    for _ in range(repeats):
        for mode in ("naive", "ours"):
            runs[mode].append(run_child(mode, path))
            print(pages, image_px, mode, runs[mode][-1], flush=True)
    result = {
        "pages": pages,
        "image_px_per_page": image_px,
        "pdf_mb": round(path.stat().st_size / 1e6, 1),
        "ours": _summary(runs["ours"], pages),
        "naive": _summary(runs["naive"], pages),
    }
    path.unlink()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "large_pdf.json")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--small-pages", type=int, default=100, help="the smaller file of the memory-growth check"
    )
    parser.add_argument(
        "--image-px",
        type=int,
        default=200,
        help="growth check: also files with a photo-like image this many px square per page",
    )
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="enclave-bigpdf-") as tmp:
        headline = measure(Path(tmp), args.pages, 0, args.repeats)
        growth = [measure(Path(tmp), args.small_pages, 0, 1)]
        if args.image_px:
            growth += [
                measure(Path(tmp), n, args.image_px, 1) for n in (args.small_pages, args.pages)
            ]
    result = {
        "benchmark": f"parse+chunk a generated {args.pages}-page PDF, child process per mode",
        "command": "python bench/large_pdf.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "when_utc": started,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m_before": load_before,
            "load_avg_1m_after": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        **headline,
        "memory_growth": [
            {
                "pages": g["pages"],
                "image_px_per_page": g["image_px_per_page"],
                "pdf_mb": g["pdf_mb"],
                **{
                    f"{mode}_{key}": g[mode][key]
                    for mode in ("ours", "naive")
                    for key in ("import_rss_mb", "peak_rss_mb", "parse_seconds")
                },
            }
            for g in [headline, *growth]
        ],
        "parent_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``enclave draft TEMPLATE --set key=value ... -o out.docx``: draft from a template file in this process.

No gateway needed: the template is parsed and checked here, fields come from ``--set``,
optional clauses from ``--include``. ``--instructions`` asks the configured LLM
(``ENCLAVE_LLM_BASE_URL``) for a plan and offers it the clause library of this data
dir; the command runs with the operator's full access to that data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from services.settings import Settings


def parse_assignments(pairs: list[str]) -> tuple[dict[str, str], list[str]]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; malformed pairs are returned as errors."""
    values: dict[str, str] = {}
    errors = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            errors.append(f"--set {pair!r}: expected key=value")
        else:
            values[key.strip()] = value
    return values, errors


def cmd_draft(args: argparse.Namespace) -> int:
    from drafting.errors import DraftingError, InvalidInput
    from drafting.generate import FORMATS, Drafter, TemplateSource, load_template
    from drafting.library import ClauseLibrary
    from ingest.stores.acl import AccessScope
    from llm.client import LLMClient, LLMError

    path = Path(args.template)
    values, errors = parse_assignments(args.set)
    if path.suffix.lower() not in FORMATS:
        errors.append(f"{path}: a template is a {' or '.join(FORMATS)} file")
    elif not path.is_file():
        errors.append(f"{path}: no such file")
    if errors:
        print("\n".join(f"enclave: {e}" for e in errors), file=sys.stderr)
        return 2
    settings = Settings()
    data = path.read_bytes()
    llm = None
    if args.instructions:
        llm = LLMClient(
            settings.llm_replica_urls,
            settings.llm_model,
            settings.llm_api_key,
            settings.llm_timeout_s,
        )
    drafter = Drafter(
        llm,
        ClauseLibrary(settings.lexical_path),
        plan_tokens=settings.drafting_plan_tokens,
        library_k=settings.drafting_library_k,
    )
    try:
        extension = path.suffix.lower()
        source = TemplateSource(repr(path.name), extension, data, load_template(data, extension))
        output = asyncio.run(
            drafter.draft(source, values, args.include, args.instructions, AccessScope.everything())
        )
    except InvalidInput as exc:
        print(f"enclave: {exc.message}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.field}: {problem.message}", file=sys.stderr)
        return 2
    except (DraftingError, LLMError) as exc:
        print(f"enclave: the model could not plan this draft: {exc}", file=sys.stderr)
        return 1
    Path(args.output).write_bytes(output.docx)
    report = {
        "clauses": [c.as_json() for c in output.report],
        "rejected": [p.as_json() for p in output.rejected],
    }
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    changed = [c for c in output.report if c.changed]
    print(f"enclave: wrote {args.output} ({len(output.report)} clauses, {len(changed)} changed)")
    for clause in changed:
        print(f"  {clause.name}: {clause.diff}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    draft = sub.add_parser("draft", help="fill a template (.md/.docx) into a DOCX draft")
    draft.add_argument("template", help="template file (.md or .docx)")
    draft.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a field value (repeat)"
    )
    draft.add_argument(
        "--include", action="append", default=[], metavar="CLAUSE", help="an optional clause"
    )
    draft.add_argument("--instructions", default=None, help="free-text request for the model")
    draft.add_argument("-o", "--output", required=True, help="where to write the DOCX")
    draft.add_argument("--report", default=None, help="also write the clause report (JSON) here")
    draft.set_defaults(func=cmd_draft)

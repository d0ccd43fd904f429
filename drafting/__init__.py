"""Contract drafting: typed templates, validation, clause library, generation, DOCX output.

A template is a sequence of blocks (Markdown lines or DOCX paragraphs) with typed
placeholders and optional clauses; a draft fills it, may add approved clauses from the
library, and may change only the parameters (durations, numbers, bracketed values) of
approved text. Every clause of a draft is traced to its source in a report.
"""

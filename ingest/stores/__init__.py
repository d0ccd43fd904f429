"""The two indexes a chunk is written to: Chroma vectors and our lexical index (SQLite FTS5 or PostgreSQL)."""

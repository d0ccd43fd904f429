"""The two indexes a chunk is written to: Chroma vectors and our SQLite FTS5 lexical index."""

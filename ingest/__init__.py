"""Document ingestion: parse, chunk, embed, and write to the vector and lexical stores."""

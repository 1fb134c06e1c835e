"""objio's built-in backends: local disk, memory, and the generic fsspec fallback."""

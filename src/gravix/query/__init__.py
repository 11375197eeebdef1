"""Query: the semantic layer (metrics x dimensions x time) and its engines."""

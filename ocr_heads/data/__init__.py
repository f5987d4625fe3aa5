"""Evidence pages: haystack sources, needle samples, page rendering with per-character boxes."""

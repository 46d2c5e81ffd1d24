"""Models written once on the backend op vocabulary (see backends/vocabulary.py)."""

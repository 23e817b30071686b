"""lrnbn: put a study note's claims about Batch Normalization versus Local Response Normalization to the test."""

__version__ = "0.1.0"

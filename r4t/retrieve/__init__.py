"""One retrieval API for every fan-out method: query text(s) → a set of K catalog items."""

from r4t.retrieve.api import RetrievedSet, Retriever

__all__ = ["RetrievedSet", "Retriever"]

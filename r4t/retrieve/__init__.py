"""Retrieval methods: query embedding(s) → sets of catalog rows. Later stages add fan-out methods here."""

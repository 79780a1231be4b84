"""Adapters: concrete implementations of the ports (state store, reads, object store)."""

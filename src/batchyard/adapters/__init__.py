"""Adapters: concrete implementations of the ports (object store, state store, executors)."""

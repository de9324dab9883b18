"""Kopf handlers, one module per kind: read → render → apply → status."""

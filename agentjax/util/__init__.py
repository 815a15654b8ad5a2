"""Shared utilities every layer may use: atomic writes, DataError and the raise-or-skip policy, strict
JSON/JSONL/CSV readers, and UTF-8 decoding that names the file and line."""

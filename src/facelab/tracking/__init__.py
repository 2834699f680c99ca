"""MLflow: the store (connection, retries, stage runs), the model registry and its champion rules, where a run
ran (provenance), and the spelling of registry URIs.

May import: the root modules. The layering rule: docs/architecture.md; tests/code/test_structure.py fails on an
import against it.
"""

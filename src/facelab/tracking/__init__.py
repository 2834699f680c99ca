"""MLflow: the store (``store``: connection, retries, stage runs and what they log), the model registry
(``registry``: registering, reading and aliasing versions, the pinned requirements) and its champion rules
(``champions``), where a run ran (``provenance``), the spelling of registry URIs (``uris``), and the team's
services on one machine, PostgreSQL, S3 and ``mlflow server`` (``local_services``: docs/team.md, the team test).

May import: the root modules. The layering rule: docs/architecture.md; tests/code/test_structure.py fails on an
import against it.
"""

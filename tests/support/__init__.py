"""What several test modules share, imported as ``tests.support.<module>``; tests/conftest.py turns the
helpers that need set-up into fixtures (``free_port``, ``mlflow_store``, ``project_copy``, the tiny networks)."""

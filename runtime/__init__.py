"""Shared runtime below the services: Kafka clients and helpers, topic admin, metrics, logging.

Layering (checked by tests/unit/test_layers.py): ``schemas`` <- ``runtime`` <- the services
(``streams``, ``consumers``, ``retrain_jobs``) <- ``deploy`` (CLI, demo, benchmarks, launcher).
"""

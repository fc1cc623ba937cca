"""A FastAPI + SQLModel app whose engine is made at import time from its settings.

Its tests (``tests/test_heroes.py``) reach that engine through ``app_engines``, with no
dependency override: the requests ``TestClient`` sends run in another thread.
"""

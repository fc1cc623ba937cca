"""A broken env.py: it fails before running any migration."""

raise RuntimeError("env.py is broken on purpose")

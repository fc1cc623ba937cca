"""Optional integrations: each needs its extra installed (``pip install 'elefast[NAME]'``)."""

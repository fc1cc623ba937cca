"""Schemas: what makes two templates the same (fingerprints of a migrator and the code it runs).

May import: :mod:`elefast._base` and :mod:`elefast.errors`; the public migrators build on it.
"""

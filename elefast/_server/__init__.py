"""One server, shared by sync and async: its admin core, templates, clone pool, ownership, disk and connection room.

May import: :mod:`elefast._base`, :mod:`elefast._engines`, :mod:`elefast._schema`, :mod:`elefast.migrators`, errors.
"""

"""Engines: URLs parsed and given a driver, engines built (sync or async), steered, and kept to a full server's slots.

May import: :mod:`elefast._base` and :mod:`elefast.errors`; never the server, schema or test rooms.
"""

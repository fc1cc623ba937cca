"""The test side: a class's settings, each test's database (isolation, app engines, guard, extra databases), outcomes.

May import: the public server API (sync, asyncio, provision), :mod:`elefast._server`, :mod:`elefast._engines`, below.
"""

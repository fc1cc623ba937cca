"""The ground floor: the SQL text elefast sends, its logger, its settings, and the process's life (fork, exit).

May import: :mod:`elefast.errors` only. Every other room stands on this one.
"""

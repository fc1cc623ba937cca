"""The reliability scenarios (``make reliability``): faults, bad input, security, parallel runners.

``python -m tests.reliability`` runs them all against a throwaway local server of their
own and prints one table (scenario, runs, failures, leftovers); it exits non-zero when
any row has an unexpected failure or a leftover. ``--only NAME`` runs the scenarios whose
function name contains NAME.
"""

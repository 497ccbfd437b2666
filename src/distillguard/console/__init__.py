"""The analyst console (``distillguard console``, docs/console.md): campaigns, accounts and the
evidence behind them, actions through the gateway's override store, and their audit trail.

auth.py: analysts, sessions, CSRF, failed-login limits; pages.py: the store's read-only queries;
act.py: where actions go; plots.py: server-side SVG; server.py: the aiohttp application.
"""

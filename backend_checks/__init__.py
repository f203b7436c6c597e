"""backend_checks: the checks of the app's Supabase backend (queries, API, realtime,
storage, load) and the reference server they run against.

Importing the package imports nothing: import the module that does what you need
(``backend_checks.check``, ``backend_checks.load``, ``backend_checks.reference``).
"""

__all__: list[str] = []

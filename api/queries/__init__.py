"""Queries: what the HTTP routes and the ``stripemeter`` command both answer.

Each module reads the application and the views and builds the response
Structs of ``api/schemas.py``, so that a route and a CLI command asking the
same question share one answer and neither imports the other. They live in
``api`` because they build API shapes: below it (``projections``, ``domain``)
they would have to import ``api``, which the layers contract forbids.
Nothing here knows HTTP: the caller has authenticated and decoded already.
"""

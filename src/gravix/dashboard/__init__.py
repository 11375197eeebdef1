"""The dashboard: static HTML, CSS and JavaScript served by ``gravix serve`` at ``/``.

The pages hold no data and no secrets; every number on them comes from the
authenticated query API (``/api/v1/...``) with the signed-in user's session.
:mod:`gravix.dashboard.routes` serves the files, :mod:`gravix.dashboard.headers` sets the
Content-Security-Policy and the other security headers. docs/dashboard.md is
the user's guide.
"""

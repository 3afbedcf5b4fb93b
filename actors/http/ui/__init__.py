"""The web dashboard at ``/ui``: server-rendered pages (Jinja2 templates in
``templates/``) and one small script of our own (``static/ui.js``) that re-reads the
live parts of a page and follows a job's log, without a library or a build step.

Pages: login and logout; the overview (nodes, pools, jobs per status, jobs ended per
minute, last failures); the jobs table and a job's page (Stop); scans and an image's
findings; projects, targets and policies (replicate now, stop the policy's jobs).
:class:`Dashboard` is the middleware that serves them from the API's app.
"""

from actors.http.ui._door import PREFIX, Dashboard, create_ui

__all__ = ["PREFIX", "Dashboard", "create_ui"]

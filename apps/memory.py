"""`panel serve apps/memory.py`: the memory view on its own; sign in on the page.

The workspace is $GRACE_WORKSPACE, else the project's grace.duckdb (see grace_core.settings), from any directory.

`grace serve` serves every view with one login, /health and /metrics; use this for a single view.
"""

from grace_core.server import app_page

app_page("memory", near=__file__).servable()

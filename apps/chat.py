"""`panel serve apps/chat.py`: the chat view on its own (the workspace is $GRACE_WORKSPACE; sign in on the page).

`grace serve` serves every view with one login, /health and /metrics; use this for a single view.
"""

from grace_core.server import app_page

app_page("chat").servable()

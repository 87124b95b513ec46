"""``python -m grace_core.cli`` is the ``grace`` command."""

from grace_core.cli import main

main()

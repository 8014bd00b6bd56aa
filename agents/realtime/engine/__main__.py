"""``python -m agents.realtime.engine --port 8765``: the standalone server."""

from ..server import main

main()

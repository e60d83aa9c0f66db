"""``python -m daskmeta``: the command line."""

from daskmeta.app.cli import main

main()

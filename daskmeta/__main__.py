"""``python -m daskmeta``: the command line."""

from daskmeta.cli import main

main()

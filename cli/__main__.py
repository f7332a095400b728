"""``python -m cli`` = ``pelletseg``."""

from cli.main import main

main()

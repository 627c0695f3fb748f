import sys

from ..cli import main

raise SystemExit(main(["review", *sys.argv[1:]]))

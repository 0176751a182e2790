"""``python -m server`` is ``lightbox serve`` (or any subcommand named first)."""

import sys

from server.cli import COMMANDS, main

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args if args and args[0] in COMMANDS else ["serve", *args]))

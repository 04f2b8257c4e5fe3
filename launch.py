#!/usr/bin/env python
"""Command line of the CJ system: `python launch.py --help`."""

import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m medfound` runs the command line."""
import sys

from medfound.cli.main import main

sys.exit(main())

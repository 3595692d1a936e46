"""`python -m vlml ...`: the `vlml` command."""

import sys

from vlml.cli.main import main

sys.exit(main())

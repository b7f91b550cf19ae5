"""`python -m ledex.server`: the language server on stdio (see main.py for options)."""

import sys

from ledex.server.main import main

sys.exit(main())

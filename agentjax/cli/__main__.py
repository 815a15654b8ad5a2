"""`python -m agentjax.cli ...`: the `agentjax` command without its console script (what tests and launchers run)."""

import sys

from agentjax.cli import main

sys.exit(main())

"""`python -m batchyard.agent <channel fd> <engine pid>`: an agent process (agent.process)."""

import sys

from batchyard.agent.process import serve

sys.exit(serve(sys.argv[1:]))

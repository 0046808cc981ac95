"""``python -m raftstore.cli ...``: the ``raftstore`` command."""

import sys

from raftstore.cli.main import main

sys.exit(main())

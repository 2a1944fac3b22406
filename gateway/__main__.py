"""``python -m gateway``: the ``glm-gateway`` command."""

from gateway.cli import main

raise SystemExit(main())

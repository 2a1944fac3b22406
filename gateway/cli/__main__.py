"""``python -m gateway.cli``: the ``glm-gateway`` command."""

from gateway.cli import main

raise SystemExit(main())

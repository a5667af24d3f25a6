"""`python -m edgecdn` is the `edgecdn` command."""

from edgecdn.cli import main

raise SystemExit(main())

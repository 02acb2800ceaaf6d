"""``python -m citadel.wheels``."""

from citadel.wheels.cli import main

raise SystemExit(main())

"""``python -m flightlog.cli``."""

from . import main

raise SystemExit(main())

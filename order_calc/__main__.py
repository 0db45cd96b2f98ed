"""``python -m order_calc``: see :mod:`order_calc.cli`."""

from order_calc.cli import main

raise SystemExit(main())

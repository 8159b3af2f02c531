"""`python -m acs_core` = the `acs` command."""
from .cli import main

raise SystemExit(main())

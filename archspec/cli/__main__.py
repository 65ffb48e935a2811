"""`python -m archspec.cli`, as `python -m archspec`."""

from . import main

main()

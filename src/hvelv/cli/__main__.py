"""`python -m hvelv.cli`."""

from hvelv.cli.main import main

main()

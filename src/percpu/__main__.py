"""Run the ``percpu`` command line: ``python -m percpu``."""

from percpu.cli.main import main

main()

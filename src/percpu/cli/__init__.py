"""The ``percpu`` command line: ``percpu [OPTIONS] OBJECT COMMAND``."""

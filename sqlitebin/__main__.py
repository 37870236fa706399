"""`python -m sqlitebin`: the same command line as the `sqlitebin` script."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="sqlitebin")

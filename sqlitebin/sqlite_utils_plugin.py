"""The sqlite-utils plugin: sqlitebin's SQL functions in every sqlite-utils connection, and a search command.

Installed with ``pip install 'sqlitebin[sqlite-utils]'`` and registered through the
``sqlite_utils`` entry point, so `sqlite-utils query docs.db "SELECT ... hamming(...)"`
works, and `sqlite-utils sqlitebin-search docs.db "query"` is `sqlitebin search` under
sqlite-utils' name: the same command, options and output.

sqlite-utils uses pysqlite3 when it is installed, else Python's sqlite3. Where that
module cannot load extensions (macOS's system Python, pyenv builds), the functions are
missing from `sqlite-utils query` (a warning says so once); the search command works
regardless, since it reads the database through apsw.
"""


import click
from sqlite_utils import hookimpl

from . import cli as sqlitebin_cli
from .extension import load_or_warn

SEARCH_COMMAND = "sqlitebin-search"
_warned = []


@hookimpl
def prepare_connection(conn):
    """Load the extension into each connection sqlite-utils opens."""
    load_or_warn(conn, _warned)


class _SearchCommand(click.Command):
    """`sqlitebin search` under sqlite-utils: library errors become one `Error:` line, as in sqlitebin's CLI."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            if sqlitebin_cli.debugging():
                raise
            raise click.ClickException(sqlitebin_cli.describe(error)) from None


def search_command():
    """A copy of `sqlitebin search` named for sqlite-utils, with its examples renamed to match."""
    original = sqlitebin_cli.search
    return _SearchCommand(
        name=SEARCH_COMMAND,
        params=list(original.params),
        callback=original.callback,
        help=original.help.replace("sqlitebin search", f"sqlite-utils {SEARCH_COMMAND}"),
        short_help=original.short_help,
        context_settings=dict(original.context_settings),
    )


@hookimpl
def register_commands(cli):
    cli.add_command(search_command())

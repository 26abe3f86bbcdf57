"""A Sphinx directive that shows ``pkpd``'s command-line help, taken from the parser itself so
the documentation cannot drift from the commands::

    ```{pkpd-cli-help} fit
    ```

(no argument: the top-level ``pkpd --help``)."""

from __future__ import annotations

import argparse
import os

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def help_text(command: str | None) -> str:
    from pkpd.cli import build_parser

    os.environ["COLUMNS"] = "96"  # argparse wraps to the terminal width: fix it
    parser = build_parser()
    if command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if command not in sub.choices:
            raise ValueError(f"pkpd has no command {command!r}; it has {', '.join(sub.choices)}")
        parser = sub.choices[command]
    return parser.format_help()


class CliHelp(SphinxDirective):
    optional_arguments = 1
    has_content = False

    def run(self):
        command = self.arguments[0] if self.arguments else None
        text = help_text(command)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app):
    app.add_directive("pkpd-cli-help", CliHelp)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

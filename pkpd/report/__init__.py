"""The self-contained HTML report of a fit and a simulation (``pkpd report``).

:func:`report` writes one HTML file; :func:`build_sections` gives its content (tables and
figures from :mod:`pkpd.diagnostics`, the functions the notebooks call) and :func:`render`
the HTML. ``pkpd.report`` is the function :func:`report`; reach the rest with
``from pkpd.report import build_sections``.
"""

from pkpd.report.build import Block, Section, build_sections, render, report

__all__ = ["Block", "Section", "build_sections", "render", "report"]

"""Packaging that pyproject.toml cannot state: the repository's top-level ``priors/`` and
``datasets/`` folders travel inside the package as ``pkpd._bundled.priors`` and
``pkpd._bundled.datasets`` (wheel and editable installs alike), so an installed pkpd finds its
bundled priors and data without the checkout (``pkpd/_bundled/__init__.py``)."""

from setuptools import find_packages, setup

BUNDLED = {"pkpd._bundled.priors": "priors", "pkpd._bundled.datasets": "datasets"}

setup(
    packages=find_packages(include=["pkpd", "pkpd.*"]) + list(BUNDLED),
    package_dir=BUNDLED,
    package_data={
        "pkpd._bundled.priors": ["*.toml", "*.md"],
        "pkpd._bundled.datasets": ["*.md", "*/*.csv", "*/*.json"],
    },
)

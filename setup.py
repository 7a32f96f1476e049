"""Packaging that pyproject.toml cannot say: the repository's ``providers/`` folder is installed as
``persistency.providers`` (so a wheel has no top-level ``providers`` module), next to every package
found under ``persistency/``. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

PROVIDERS = ["persistency.providers"] + [f"persistency.providers.{p}" for p in find_packages("providers")]

setup(
    packages=find_packages(include=["persistency", "persistency.*"]) + PROVIDERS,
    package_dir={"persistency.providers": "providers"},
    package_data={"persistency": ["py.typed"], "persistency.providers": ["py.typed"]},
)

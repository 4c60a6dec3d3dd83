"""Packages for setuptools; everything else about the distribution is in pyproject.toml.

models/default, the shipped model, stays at the repository's top level and is installed as
diffusion_core/models/default (diffusion_core.paths.default_model_dir finds either)."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["diffusion_core*", "backends*", "webapp*"]) + ["diffusion_core.models"],
      package_dir={"diffusion_core.models": "models"})

"""Package list for setuptools (all metadata is in pyproject.toml).

``dextr_core`` and its sub-packages as they are; ``dextr_annotator`` is the repository root
mapped to a package, so an installed copy carries app.py, pages/ and ui/ (and the package data
listed in pyproject.toml) in one folder, found by ``dextr_core.launch.app_dir``. Streamlit puts
app.py's folder on ``sys.path``, so the app's own ``from ui import ...`` works there unchanged.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    """The package list's build step, less this file (it sits in the mapped repository root)."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == "dextr_annotator" and m[1] == "setup")]


setup(
    cmdclass={"build_py": BuildPy},
    packages=[*find_packages(include=["dextr_core", "dextr_core.*"]),
              "dextr_annotator", "dextr_annotator.ui", "dextr_annotator.pages"],
    package_dir={"dextr_annotator": ".", "dextr_core": "dextr_core"},
)

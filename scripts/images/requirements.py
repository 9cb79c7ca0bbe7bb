"""Print the requirements of the project and some of its extras, one per line, from pyproject.toml.

The Dockerfile installs these before it copies the source, so a code change reuses the cached
dependency layer. Extras that name the project itself (``swell[...]``) are left out.
Usage: python requirements.py PYPROJECT EXTRA...
"""

import sys
import tomllib

with open(sys.argv[1], "rb") as handle:
    project = tomllib.load(handle)["project"]
name = project["name"]
requirements = list(project["dependencies"])
for extra in sys.argv[2:]:
    requirements += project["optional-dependencies"][extra]
for requirement in requirements:
    if not requirement.replace(" ", "").startswith(f"{name}["):
        print(requirement)

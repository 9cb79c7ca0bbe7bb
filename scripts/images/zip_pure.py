"""Move a venv's pure-Python packages into one zip on sys.path, to keep images small.

kubernetes_asyncio alone is ~50 MB of generated source and bytecode; deflated in a zip it is a tenth of
that, and zipimport loads it as fast. Only packages made of nothing but modules move (a package cannot be
split between a zip and a directory, and one with data files may open them by path).
Each module keeps its source (for tracebacks) next to an unchecked hash-based .pyc, which zipimport uses
without recompiling: the root filesystem is read-only at run time, so nothing could be cached later.
Metadata (``*.dist-info``) stays in site-packages, so ``importlib.metadata`` still finds every package.
Usage: python zip_pure.py SITE_PACKAGES ZIP_PATH
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sys
import zipfile
from importlib import _bootstrap_external  # type: ignore[attr-defined]
from pathlib import Path

# Packages that open their own files by path (CA bundle, time zone data) or that we want to read as files.
KEEP = {"certifi", "tzdata", "dateutil", "pip", "setuptools", "_distutils_hack"}
KEEP_PREFIXES = ("swell_",)
# Files a package may carry and still move: modules, and text nobody opens by path (docs, licences,
# .proto sources of generated modules). Anything else (.so, .json, .onnx, .pem, ...) keeps it a directory.
MOVABLE_SUFFIXES = {".py", ".pyi", ".typed", ".md", ".rst", ".txt", ".proto"}
MOVABLE_NAMES = {"LICENSE", "LICENCE", "NOTICE", "AUTHORS", "COPYING", ".gitignore"}


def only_python(directory: Path) -> bool:
    """Modules and harmless text only: a package with extension modules or data files stays a directory."""
    return all(
        path.is_dir() or path.suffix in MOVABLE_SUFFIXES or path.name in MOVABLE_NAMES or "__pycache__" in path.parts
        for path in directory.rglob("*")
    )


def movable_packages(directory: Path) -> list[Path]:
    """Regular packages without extension modules; namespace packages (google, …) are searched inside.

    A namespace package may live partly here and partly in the zip: Python joins its portions from
    every sys.path entry, so google._upb (an extension) stays while google.api_core moves.
    """
    found: list[Path] = []
    for package in sorted(p for p in directory.iterdir() if p.is_dir()):
        if package.name in KEEP or package.name.startswith(KEEP_PREFIXES) or "." in package.name:
            continue  # *.dist-info, *.libs and the like
        if package.name == "__pycache__" or package.name.endswith("-stubs"):
            continue
        if (package / "__init__.py").is_file():
            if only_python(package):
                found.append(package)
        elif any(package.glob("*/__init__.py")):
            found += movable_packages(package)
    return found


def pyc(source: Path) -> bytes:
    data = source.read_bytes()
    code = compile(data, str(source), "exec", dont_inherit=True)
    return bytes(_bootstrap_external._code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False))


def main(site_packages: Path, archive: Path) -> None:
    packages = movable_packages(site_packages)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zipped:
        directories: set[str] = set()
        for package in packages:
            for path in sorted(package.rglob("*")):
                if path.is_dir() or "__pycache__" in path.parts:
                    continue
                name = path.relative_to(site_packages).as_posix()
                # zipimport sees a namespace portion only through an explicit directory entry.
                for parent in reversed(Path(name).parents[:-1]):
                    if parent.as_posix() not in directories:
                        directories.add(parent.as_posix())
                        zipped.writestr(parent.as_posix() + "/", b"")
                zipped.write(path, name)
                if path.suffix == ".py":
                    with contextlib.suppress(SyntaxError):  # a template that is not Python is never imported
                        zipped.writestr(name + "c", pyc(path))
    for package in packages:
        shutil.rmtree(package)
    (site_packages / "zz-swell-zipped.pth").write_text(f"{archive}\n")
    print(f"zipped {len(packages)} packages into {archive} ({archive.stat().st_size // 1024} KiB)", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

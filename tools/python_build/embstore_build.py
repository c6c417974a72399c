"""The build backend of embstore's Python package (PEP 517; pyproject.toml names it).

`pip install .` at the repository's top calls build_wheel: it runs `swift build -c release
--product EmbStoreC` (the C API's shared library) and writes a wheel holding the package
Sources/python/embstore, the library and its header (which the package reads with cffi) beside it. No build requirement is downloaded: the
backend is this file, and a wheel is a zip file with three metadata files (PEP 427).

The wheel runs on machines with the Swift toolchain that built it (the library finds Swift's
runtime libraries where that toolchain keeps them), which is what building from source gives.
"""
import base64
import hashlib
import os
import subprocess
import sysconfig
import tarfile
import zipfile

NAME, VERSION = "embstore", "0.1.0"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "Sources", "python", "embstore")
DIST_INFO = f"{NAME}-{VERSION}.dist-info"
METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: An embedded store for compressed embedding tables (LMDB), with batched and pooled lookups into NumPy arrays
Requires-Python: >=3.8
Requires-Dist: numpy
Requires-Dist: cffi>=1.12
"""


def _platform_tag():
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def _wheel_file():
    return f"Wheel-Version: 1.0\nGenerator: embstore_build\nRoot-Is-Purelib: false\nTag: py3-none-{_platform_tag()}\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    directory = os.path.join(metadata_directory, DIST_INFO)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "METADATA"), "w") as f:
        f.write(METADATA)
    with open(os.path.join(directory, "WHEEL"), "w") as f:
        f.write(_wheel_file())
    return DIST_INFO


def _build_library():
    """The release build of libEmbStoreC.so; its path."""
    command = ["swift", "build", "-c", "release", "--product", "EmbStoreC"]
    subprocess.run(command, cwd=ROOT, check=True)
    bin_path = subprocess.run(command[:4] + ["--show-bin-path"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    library = os.path.join(bin_path, "libEmbStoreC.so")
    if not os.path.exists(library):
        raise RuntimeError(f"swift build made no {library}")
    return library


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    library = _build_library()
    files = [(f"{NAME}/{name}", os.path.join(PACKAGE, name)) for name in sorted(os.listdir(PACKAGE)) if name.endswith(".py")]
    files.append((f"{NAME}/libEmbStoreC.so", library))
    files.append((f"{NAME}/embstore.h", os.path.join(ROOT, "Sources", "CEmbStore", "include", "embstore.h")))   # cffi reads it
    wheel_name = f"{NAME}-{VERSION}-py3-none-{_platform_tag()}.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel_name), "w", zipfile.ZIP_DEFLATED) as wheel:
        def add(arcname, data):
            wheel.writestr(arcname, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arcname},sha256={digest},{len(data)}")
        for arcname, path in files:
            with open(path, "rb") as f:
                add(arcname, f.read())
        add(f"{DIST_INFO}/METADATA", METADATA.encode())
        add(f"{DIST_INFO}/WHEEL", _wheel_file().encode())
        record.append(f"{DIST_INFO}/RECORD,,")
        wheel.writestr(f"{DIST_INFO}/RECORD", "\n".join(record) + "\n")
    return wheel_name


def build_sdist(sdist_directory, config_settings=None):
    """The repository's tracked files (git ls-files), as NAME-VERSION.tar.gz."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    base = f"{NAME}-{VERSION}"
    with tarfile.open(os.path.join(sdist_directory, base + ".tar.gz"), "w:gz") as sdist:
        for name in filter(None, names):
            sdist.add(os.path.join(ROOT, name), arcname=f"{base}/{name}")
    return base + ".tar.gz"

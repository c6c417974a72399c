"""The build backend of embstore's Python package (PEP 517; pyproject.toml names it).

`pip install .` at the repository's top calls build_wheel: it runs `swift build -c release
--product EmbStoreC` (the C API's shared library) and writes a wheel holding the package
Sources/python/embstore, the library and its header (which the package reads with cffi) beside
it, and the extension module _calls compiled from _calls.c when Python's headers and a C
compiler are there (without it the package makes every call through cffi, slower; the build
says so and goes on). No build requirement is downloaded: the backend is this file, and a
wheel is a zip file with three metadata files (PEP 427).

The wheel runs on machines with the Swift toolchain that built it (the library finds Swift's
runtime libraries where that toolchain keeps them), which is what building from source gives.
"""
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
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


def _tag(extension):
    """The wheel's tag: any Python 3 on this platform, or this interpreter's ABI with the extension module."""
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if not extension:
        return f"py3-none-{platform}"
    version = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return f"{version}-{version}{sys.abiflags}-{platform}"


def _wheel_file(extension=False):
    return f"Wheel-Version: 1.0\nGenerator: embstore_build\nRoot-Is-Purelib: false\nTag: {_tag(extension)}\n"


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


def build_extension(directory):
    """Compiles _calls.c into `directory` as the extension module _calls; its path, or None, with
    the reason on stderr, when this interpreter is not CPython or its headers or a C compiler are
    missing."""
    include = sysconfig.get_paths()["include"]
    configured = (sysconfig.get_config_var("CC") or "").split()
    compilers = [c for c in ([configured] if configured else []) + [["cc"], ["clang"], ["gcc"]] if shutil.which(c[0])]
    reason = ("the interpreter is not CPython" if sys.implementation.name != "cpython"
              else f"Python's headers are missing ({include}/Python.h)" if not os.path.exists(os.path.join(include, "Python.h"))
              else "no C compiler (cc, clang, gcc) was found" if not compilers else None)
    target = os.path.join(directory, "_calls" + sysconfig.get_config_var("EXT_SUFFIX"))
    for compiler in compilers if reason is None else []:
        command = compiler + ["-O2", "-shared", "-fPIC", "-I", include, os.path.join(PACKAGE, "_calls.c"), "-o", target]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode == 0:
            return target
        reason = f"{' '.join(command)} failed: {run.stderr.strip()[-2000:]}"
    print(f"embstore: lookups will go through cffi, without the extension module _calls: {reason}", file=sys.stderr)
    return None


def stage_package(directory, library=None):
    """The package as the wheel installs it, laid out in `directory`/embstore: its Python files,
    the header (cffi reads it), the extension module when it compiles, and `library` (the C API's
    libEmbStoreC.so) when given. Returns whether the extension module is there."""
    package = os.path.join(directory, NAME)
    os.makedirs(package, exist_ok=True)
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py"):
            shutil.copyfile(os.path.join(PACKAGE, name), os.path.join(package, name))
    shutil.copyfile(os.path.join(ROOT, "Sources", "CEmbStore", "include", "embstore.h"), os.path.join(package, "embstore.h"))
    if library is not None:
        shutil.copyfile(library, os.path.join(package, "libEmbStoreC.so"))
    return build_extension(package) is not None


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    library = _build_library()
    staging = tempfile.mkdtemp(prefix="embstore-wheel-")
    try:
        extension = stage_package(staging, library)
        return _write_wheel(wheel_directory, staging, extension)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_wheel(wheel_directory, staging, extension):
    """The wheel of the package staged in `staging`; its file name."""
    files = []
    for name in sorted(os.listdir(os.path.join(staging, NAME))):
        files.append((f"{NAME}/{name}", os.path.join(staging, NAME, name)))
    wheel_name = f"{NAME}-{VERSION}-{_tag(extension)}.whl"
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
        add(f"{DIST_INFO}/WHEEL", _wheel_file(extension).encode())
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

"""Everything is in setup.cfg but the C extension, which setup.cfg cannot declare:
``kraken._speedups``, the hot byte scans (kraken/csrc/speedups.h lists them). Optional:
without a C compiler the install still succeeds, and their Python definitions serve."""
from setuptools import Extension, setup

SOURCES = ["speedups.c", "plainchunk.c", "h1fast.c", "response_head.c", "pipe.c",
           "header.c", "depth.c", "arena.c", "deadline.c",
           "series.c", "fields.c", "request_bytes.c"]

setup(ext_modules=[Extension(
    "kraken._speedups", [f"kraken/csrc/{name}" for name in SOURCES],
    depends=["kraken/csrc/speedups.h"], optional=True)])

"""Everything is in setup.cfg but the one C extension, which setup.cfg cannot declare: the
relay's per-read test (kraken/_plainchunk.c). Optional: without a C compiler the install
still succeeds, and kraken/plainchunk.py's Python definition serves instead."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("kraken._plainchunk", ["kraken/_plainchunk.c"], optional=True)])

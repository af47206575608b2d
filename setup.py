"""Everything is in setup.cfg but the C extensions, which setup.cfg cannot declare: the
relay's per-read test (kraken/_plainchunk.c), the common request head's reader
(kraken/_h1fast.c) and a provider response's field reader (kraken/_response_head.c).
Optional: without a C compiler the install still succeeds, and the Python definitions
(kraken/plainchunk.py, kraken/http/h1fast.py, kraken/upstream/response.py) serve instead."""
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("kraken._plainchunk", ["kraken/_plainchunk.c"], optional=True),
    Extension("kraken._h1fast", ["kraken/_h1fast.c"], optional=True),
    Extension("kraken._response_head", ["kraken/_response_head.c"], optional=True),
])

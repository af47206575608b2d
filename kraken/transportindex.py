"""A leaner index of uvloop's transports: a weak reference per connection, not a ``KeyedRef``.

uvloop remembers every transport by its file descriptor, so that ``add_reader`` on a
descriptor a live transport owns is refused. The index is a ``weakref.WeakValueDictionary``,
whose ``__setitem__`` and removal callback are Python: building a ``KeyedRef`` per
connection and running ``_remove`` when it is gone cost ~110 bytecodes a stream (a client
and a provider connection; bench/opcount.py --new-conn --new-upstream), 0.6-0.8 us per
connection against 0.2 for a plain weak reference.

``lean_transport_index`` gives the loop's index a ``__setitem__`` that stores a plain
``weakref.ref``: lookups (``WeakValueDictionary.__getitem__`` calls the reference and
treats a dead one as absent) answer as before, so the refusal stands. A dead transport's
entry stays until its descriptor is reused, so the index holds at most one small object
per descriptor number the process has used (bounded by ``RLIMIT_NOFILE``). On any other
loop, or a uvloop laid out differently, nothing changes.
"""
from __future__ import annotations

import asyncio
import gc
import weakref

__all__ = ["LeanTransportIndex", "lean_transport_index", "transport_index"]


class LeanTransportIndex(weakref.WeakValueDictionary):
    """``WeakValueDictionary`` whose entries are plain weak references (no removal callback)."""

    def __setitem__(self, key, value, _ref=weakref.ref):  # type: ignore[override]
        self.data[key] = _ref(value)


def transport_index(loop: asyncio.AbstractEventLoop) -> weakref.WeakValueDictionary | None:
    """uvloop's index of ``loop``'s transports (a private attribute, found among what the loop
    references); None where ``loop`` is not uvloop's or holds no single such index."""
    if type(loop).__module__.split(".")[0] != "uvloop":
        return None
    found = [obj for obj in gc.get_referents(loop)
             if type(obj) in (weakref.WeakValueDictionary, LeanTransportIndex)]
    return found[0] if len(found) == 1 else None


def lean_transport_index(loop: asyncio.AbstractEventLoop) -> bool:
    """Make ``loop``'s transport index a ``LeanTransportIndex``; False where it has none
    (``transport_index``: nothing changed)."""
    index = transport_index(loop)
    if index is None:
        return False
    index.__class__ = LeanTransportIndex
    return True

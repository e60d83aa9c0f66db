"""The Numba kernels' on-disk cache is keyed by every kernel module's source.

A kernel inlines the kernels it calls, often from other modules (the cell null calls the screen,
the certified decision and the labelling), while Numba keys a function's cache by its own
module only; :func:`daskmeta.stats._pooling_jit._jit` adds the digest of all kernel modules to
each kernel's cache stamp, so a change to any of them recompiles every kernel.
"""

from __future__ import annotations

from daskmeta.stats import _cell_null_jit, _pooling_jit, _screen_jit
from daskmeta.stats._pooling_jit import KERNEL_DIGEST, kernel_digest


def test_kernel_digest_follows_every_kernel_module(tmp_path):
    (tmp_path / "_a_jit.py").write_text("x = 1\n")
    (tmp_path / "_b_jit.py").write_text("y = 2\n")
    first = kernel_digest(tmp_path)
    (tmp_path / "notes.py").write_text("not a kernel\n")
    assert kernel_digest(tmp_path) == first
    (tmp_path / "_b_jit.py").write_text("y = 3\n")
    changed = kernel_digest(tmp_path)
    assert changed != first
    (tmp_path / "_b_jit.py").write_text("y = 2\n")
    assert kernel_digest(tmp_path) == first
    (tmp_path / "_b_jit.py").rename(tmp_path / "_c_jit.py")  # the names count too
    assert kernel_digest(tmp_path) not in (first, changed)


def test_every_kernel_cache_stamp_holds_the_digest():
    for kernel in (_cell_null_jit.cell_null_randomizations, _screen_jit.screen_cells,
                   _pooling_jit.finish):
        stamp = kernel._cache._cache_file._source_stamp
        assert stamp[1] == KERNEL_DIGEST
    assert KERNEL_DIGEST == kernel_digest()

"""The fused CPU kernel for SM3 (``kernel_updates.cpp``, ``kernel.cpp``): built at first use,
cached on disk.

:func:`kernel` compiles the C++ sources (the update arithmetic per cover, then the entry points
and bindings, as one unit) with ``torch.utils.cpp_extension.load_inline`` into a
directory keyed by a hash of the source, the compiler flags, torch's and Python's versions and
the CPU's instruction-set flags, so a later process (or a later run) loads the built library in
under a second. The cold build took 34-66 s on this two-core machine lightly loaded and 150-220 s
under a load average of 10-12, so a cold build says so on stderr when it starts and how long it
took; ``python -m sm3repro.optim.sm3.fused`` (which ``make install`` runs) builds it ahead.
Where no compiler (or ninja) is available, :func:`kernel` returns ``None`` after one warning.
Whether SM3 uses it is decided elsewhere, in one place:
:func:`sm3repro.optim.sm3.optimizer.kernel_for`.

``kernel.cpp`` declares its own bindings (keyword-only, named arguments), so ``load_inline`` is
given no ``functions`` to generate positional ones for.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["build_seconds", "kernel", "kernel_name"]

# One translation unit in this order: the arithmetic, then the entry points that call it.
_SOURCES = tuple(Path(__file__).with_name(name) for name in ("kernel_updates.cpp", "kernel.cpp"))
# No -ffast-math: linked into a shared library it would flush denormals process-wide. These
# flags only let the compiler vectorize the max-reductions and skip errno on sqrt.
_CFLAGS = [
    "-O3",
    "-fopenmp",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-ffinite-math-only",
    "-fno-signed-zeros",
]
_build_seconds: float | None = None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _cflags() -> list[str]:
    # -march=native only where the CPU's flags enter the cache key (a shared home directory on
    # a different CPU then builds its own copy instead of loading illegal instructions).
    return _CFLAGS + (["-march=native"] if _cpu_flags() else [])


@cache
def _source_texts() -> tuple[str, ...]:
    # read once per process: the cache key and the build both need them
    return tuple(source.read_text(encoding="utf-8") for source in _SOURCES)


def kernel_name() -> str:
    """Module name: changes whenever the source, flags, torch, Python or the CPU changes."""
    key = "\n".join(
        [
            *_source_texts(),
            " ".join(_cflags()),
            torch.__version__,
            sys.version,
            platform.machine(),
            _cpu_flags(),
        ]
    )
    return "sm3repro_sm3_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _build_dir(name: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = root / "sm3repro" / "torch_extensions" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@cache
def kernel() -> Any | None:
    """The compiled module (``sm3_step``, ``sm3_step_many``, ``sum_duplicate_rows``, each
    taking keyword arguments only), or ``None`` where it cannot be built."""
    global _build_seconds
    try:
        from torch.utils.cpp_extension import load_inline, verify_ninja_availability

        verify_ninja_availability()
        name = kernel_name()
        build_dir = _build_dir(name)
        cold = not (build_dir / f"{name}.so").is_file()
        if cold:  # a cold build takes tens of seconds: say so, or the command looks frozen
            print(
                "sm3repro: building SM3's fused CPU kernel (once per machine and torch version; "
                "about 20-60 s, minutes on a slow or busy host)...",
                file=sys.stderr, flush=True,
            )  # fmt: skip
        start = time.perf_counter()
        module = load_inline(
            name=name,
            # load_inline joins these into one file; kernel.cpp has the PYBIND11_MODULE
            cpp_sources=list(_source_texts()),
            extra_cflags=_cflags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            verbose=False,
        )
        _build_seconds = time.perf_counter() - start
        if cold:
            print(
                f"sm3repro: SM3 kernel built in {_build_seconds:.1f} s (cached in {build_dir})",
                file=sys.stderr, flush=True,
            )  # fmt: skip
        return module
    except Exception as error:  # no compiler, no ninja, a failed build: run eagerly instead
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        warnings.warn(
            f"SM3: fused CPU kernel unavailable, using the eager torch path (impl=forloop) "
            f"({first_line})",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def build_seconds() -> float | None:
    """Seconds the first :func:`kernel` call took in this process (a cache hit is fast)."""
    return _build_seconds


if __name__ == "__main__":  # build ahead of the first run: python -m sm3repro.optim.sm3.fused
    if kernel() is None:
        print("sm3repro: SM3's fused kernel is unavailable here; SM3 will run impl=forloop")
    else:
        print(f"sm3repro: SM3's fused kernel is ready ({kernel_name()})")

"""paretobench: Pareto-set approximation benchmarks for model merging. See README.md.

Importing `bench` (which every harness module does first) pins the CPU instruction set that torch,
MKL, oneDNN and numpy's OpenBLAS dispatch to, before torch or numpy is loaded. The offline suites are trained by the harness
itself, and training is chaotic: the same seed built with AVX-512 kernels on one machine and AVX2
kernels on another gave tiny-gpt2 fronts 0.05 HV apart. With every x86-64 machine on the AVX2
code paths (single-threaded, as the builds are) a build, and every CPU run on it, is the same
wherever it runs. `PARETOBENCH_CPU_ISA=native` keeps each library's own choice (faster on some
CPUs; results then depend on the machine); GPU work is unaffected either way.
"""
import os
import platform

__version__ = "0.1.0"

CPU_ISA = os.environ.get("PARETOBENCH_CPU_ISA", "avx2").lower()
if CPU_ISA != "native" and platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("ATEN_CPU_CAPABILITY", CPU_ISA)         # torch's own vectorised kernels
    os.environ.setdefault("MKL_CBWR", CPU_ISA.upper())            # MKL: conditional numerical reproducibility
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", CPU_ISA.upper())  # oneDNN (convolutions)
    # numpy's and scipy's OpenBLAS (MAP's fits, NSGA): its kernels are chosen per CPU model (an AMD Zen 4 and
    # an Intel AVX-512 machine gave MAP fronts 0.04 HV apart); imported after this module, it keeps this one
    coretype = {"avx2": "Haswell", "avx512": "SkylakeX"}.get(CPU_ISA)
    if coretype:
        os.environ.setdefault("OPENBLAS_CORETYPE", coretype)

"""Ahead-of-time compile check for every Triton kernel specialization; needs no GPU.

    python -m lstm_kernels.aot --arch sm_90        # or sm_80, 90, 80
    python -m lstm_kernels.aot --arch sm_90 --fast # the subset CI compiles
    python -m lstm_kernels.aot --arch sm_90 --module path/to/file.py:specs_function

Every module under ``lstm_kernels._triton`` that defines ``aot_specs(arch)`` (each tier
package's ``aot_specs`` module; see ``_triton/specs.py``) is imported (found with pkgutil,
so a new tier is checked as soon as it exists). Each ``KernelSpec`` is compiled to a cubin for the target with
``triton.compile``; the bundled ``ptxas -v`` reports registers and spills of the PTX,
and the compiled metadata the shared memory one program needs. One row per kernel is
printed, then a one-line summary. Compilation runs in ``--jobs`` worker processes
(default 2) with the interpreter off, so a compiler crash fails one kernel, not the run. The exit status is non-zero when any kernel fails
to compile, spills registers, or needs more shared memory than one block may have.

Labels use the dimensions of the rest of the package: B batch, H hidden size,
P = proj_size or H, BLOCK_* tile sizes.
"""
from __future__ import annotations

import argparse
import importlib
import json
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

# Shared memory one block may use (the opt-in maximum, bytes), from the CUDA
# programming guide's compute-capability table.
SMEM_LIMIT = {
    80: 163 * 1024,  # A100
    86: 99 * 1024,
    89: 99 * 1024,
    90: 227 * 1024,  # H100 / H200
}


@dataclass
class KernelReport:
    """What compiling one ``KernelSpec`` for one architecture produced."""

    module: str
    name: str
    label: str
    num_warps: int
    num_stages: int
    arch: int
    registers: Optional[int] = None
    spill_stores: Optional[int] = None  # bytes
    spill_loads: Optional[int] = None  # bytes
    stack: Optional[int] = None  # bytes of local-memory stack frame
    shared: Optional[int] = None  # bytes of shared memory per program
    seconds: float = 0.0
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)

    @property
    def spills(self) -> int:
        return (self.spill_stores or 0) + (self.spill_loads or 0)

    def problems(self) -> list[str]:
        """Why this kernel fails the check (empty when it passes)."""
        if self.error is not None:
            return [f"compile failed: {self.error}"]
        found = []
        if self.spills:
            found.append(f"spills {self.spill_stores} B stores / {self.spill_loads} B loads")
        limit = SMEM_LIMIT[self.arch]
        if self.shared is not None and self.shared > limit:
            found.append(f"shared memory {self.shared} B over the sm_{self.arch} limit of {limit} B")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()


def parse_arch(text) -> int:
    """``"sm_90"``, ``"sm90"``, ``"90"`` or ``90`` -> 90; ValueError for anything unsupported."""
    m = re.fullmatch(r"(?:sm_?)?(\d+)a?", str(text).strip().lower())
    if m is None or int(m.group(1)) not in SMEM_LIMIT:
        known = ", ".join(f"sm_{a}" for a in sorted(SMEM_LIMIT))
        raise ValueError(f"--arch must be one of {known} (or the bare number); got {text!r}")
    return int(m.group(1))


def _require_compiled_mode() -> None:
    # @triton.jit decides between a compilable JITFunction and an interpreter wrapper
    # when the kernel module is imported, so the choice must be made before that.
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError(
            "the AOT check compiles real cubins, but TRITON_INTERPRET is set; use "
            "`python -m lstm_kernels.aot` or aot.check_sources, which compile in clean processes"
        )


def discover_modules() -> list[str]:
    """Names of the modules under ``lstm_kernels._triton`` (tier packages included) that
    define ``aot_specs``."""
    from . import _triton

    names = []
    found = pkgutil.walk_packages(_triton.__path__, f"{_triton.__name__}.")
    for info in sorted(found, key=lambda i: i.name):
        if info.ispkg:
            continue
        name = info.name
        module = importlib.import_module(name)
        if callable(getattr(module, "aot_specs", None)):
            names.append(name)
    return names


def collect_specs(arch: int, modules: Optional[Sequence[str]] = None) -> list[tuple[str, object]]:
    """``(module name, KernelSpec)`` for every spec the kernel modules declare for ``arch``."""
    out = []
    for name in discover_modules() if modules is None else modules:
        specs = importlib.import_module(name).aot_specs(arch)
        if not isinstance(specs, (list, tuple)):
            raise TypeError(
                f"{name}.aot_specs({arch}) must return a list of KernelSpec, got {type(specs).__name__}"
            )
        out.extend((name, s) for s in specs)
    return out


def _ptxas(arch: int) -> str:
    """Path of the ptxas binary triton itself uses for ``arch``."""
    from triton.backends.nvidia import compiler as nv

    get = getattr(nv, "get_ptxas", None)
    if get is not None:
        try:
            tool = get(arch)
        except TypeError:  # older triton: get_ptxas() takes no architecture
            tool = get()
        return tool.path
    return nv._path_to_binary("ptxas")[0]


def _gpu_name(arch: int) -> str:
    from triton.backends.nvidia import compiler as nv

    to_name = getattr(nv, "sm_arch_from_capability", None)
    if to_name is not None:
        return to_name(arch)
    return f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"


def _ptxas_usage(ptx: str, kernel_name: str, arch: int) -> dict:
    """Registers, spill and stack bytes of ``kernel_name`` as ``ptxas -v`` reports them."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cubin = os.path.join(tmp, "kernel.cubin")
        cmd = [_ptxas(arch), "-v", f"--gpu-name={_gpu_name(arch)}", src, "-o", cubin]
        run = subprocess.run(cmd, capture_output=True, text=True)
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise RuntimeError(f"ptxas exited with {run.returncode}:\n{log}")
    # The log lists each entry function; keep the part about this kernel.
    part = log.split(f"Function properties for {kernel_name}", 1)[-1]
    regs = re.search(r"Used (\d+) registers", part)
    spill = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", part)
    if regs is None or spill is None:
        raise RuntimeError(f"could not read registers/spills from the ptxas log:\n{log}")
    return {
        "registers": int(regs.group(1)),
        "stack": int(spill.group(1)),
        "spill_stores": int(spill.group(2)),
        "spill_loads": int(spill.group(3)),
    }


def _cuobjdump() -> Optional[str]:
    """Path of the cuobjdump bundled with triton, or None."""
    try:
        from triton import knobs

        tool = getattr(knobs.nvidia, "cuobjdump", None)
        if tool is not None and os.path.exists(tool.path):
            return tool.path
    except (ImportError, AttributeError, RuntimeError):
        pass
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else None


def _cubin_usage(cubin: bytes, kernel_name: str) -> Optional[dict]:
    """Registers and stack of ``kernel_name`` in the cubin triton itself built.

    Reading the real cubin matters: rerunning ptxas on the PTX without triton's own flags
    (``-lineinfo``, ``--regAllocOptLevel``) gives different register counts and phantom
    spills. cuobjdump reports the per-thread stack frame and local memory, not spill bytes
    as such; any non-zero stack or local memory is counted as a spill (conservative).
    """
    tool = _cuobjdump()
    if tool is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        run = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"cuobjdump exited with {run.returncode}:\n{run.stdout}{run.stderr}")
    part = run.stdout.split(f"Function {kernel_name}:", 1)[-1]
    usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", part)
    if usage is None:
        raise RuntimeError(f"could not read resource usage from cuobjdump:\n{run.stdout}")
    stack, local = int(usage.group(2)), int(usage.group(3))
    return {"registers": int(usage.group(1)), "stack": stack, "spill_stores": stack + local, "spill_loads": 0}


def _ast_source(ast_source, spec):
    # triton >= 3.2 (3.6 and 3.9 included) names the keyword ``constexprs``; older
    # releases called it ``constants``.
    import inspect

    params = inspect.signature(ast_source.__init__).parameters
    key = "constexprs" if "constexprs" in params else "constants"
    names = list(spec.signature)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in getattr(spec, "divisible_by_16", ())}
    return ast_source(fn=spec.kernel, signature=dict(spec.signature), attrs=attrs, **{key: dict(spec.constexprs)})


def compile_spec(spec, arch: int, module: str = "") -> KernelReport:
    """Compile one ``KernelSpec`` for ``sm_<arch>`` and measure it; errors go into the report."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    name = getattr(spec.kernel, "__name__", repr(spec.kernel))
    report = KernelReport(
        module=module, name=name, label=spec.label, num_warps=spec.num_warps,
        num_stages=spec.num_stages, arch=arch, extra=dict(spec.extra),
    )
    start = time.perf_counter()
    try:
        if not isinstance(spec.kernel, JITFunction):
            raise TypeError(
                f"{name} is a {type(spec.kernel).__name__}, not a triton JITFunction; kernel modules "
                "imported with TRITON_INTERPRET=1 cannot be compiled (run `python -m lstm_kernels.aot`)"
            )
        unknown = set(spec.signature) - set(spec.kernel.arg_names)
        if unknown:
            raise ValueError(f"signature names {sorted(unknown)} are not arguments of {name}")
        src = _ast_source(ASTSource, spec)
        compiled = triton.compile(
            src,
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": spec.num_warps, "num_stages": spec.num_stages},
        )
        report.shared = int(compiled.metadata.shared)
        usage = _cubin_usage(compiled.asm["cubin"], compiled.metadata.name)
        if usage is None:  # no cuobjdump bundled: rerun ptxas on the PTX
            usage = _ptxas_usage(compiled.asm["ptx"], compiled.metadata.name, arch)
        report.registers = usage["registers"]
        report.stack = usage["stack"]
        report.spill_stores = usage["spill_stores"]
        report.spill_loads = usage["spill_loads"]
    except Exception as e:  # recorded in the report and turned into a non-zero exit by main()
        first = str(e).strip().splitlines()
        report.error = f"{type(e).__name__}: {first[0] if first else ''}"
        report.extra["traceback"] = str(e)
    report.seconds = time.perf_counter() - start
    return report


def check_specs(specs: Sequence, arch: int, module: str = "") -> list[KernelReport]:
    """Compile and measure ``specs`` (KernelSpec, or ``(module, KernelSpec)`` pairs) in this process.

    Only for a process that never runs the Triton interpreter: the interpreter patches
    ``triton.language`` in ways that break the compiler. :func:`check_sources` runs
    this in clean worker processes and is what everything else should call.
    """
    arch = parse_arch(arch)
    _require_compiled_mode()
    reports = []
    for item in specs:
        mod, spec = item if isinstance(item, tuple) else (module, item)
        reports.append(compile_spec(spec, arch, mod))
    return reports


def load_specs(source: str, arch: int) -> list:
    """The KernelSpecs of ``source``: a module name (its ``aot_specs``) or ``path/to/file.py:function``."""
    if ":" not in source:
        return [s for _, s in collect_specs(arch, [source])]
    path, func = source.rsplit(":", 1)
    if not os.path.isfile(path):
        raise ValueError(f"spec source {source!r}: {path} is not a file")
    spec_obj = importlib.util.spec_from_file_location(f"_aot_specs_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(spec_obj)
    spec_obj.loader.exec_module(module)
    specs = getattr(module, func)(arch)
    if not isinstance(specs, (list, tuple)):
        raise TypeError(f"{source}({arch}) must return a list of KernelSpec, got {type(specs).__name__}")
    return list(specs)


_TYPE_BYTES = {"fp64": 8, "i64": 8, "fp32": 4, "i32": 4, "fp16": 2, "bf16": 2, "i16": 2, "i8": 1, "i1": 1}


def _pointer_types(spec) -> tuple:
    return tuple(v for v in spec.signature.values() if isinstance(v, str) and v.startswith("*"))


def _weight(spec) -> float:
    # How much of the chip one program of this spec asks for: larger tiles, wider
    # elements, more warps and stages mean more registers and shared memory.
    w = float(spec.num_warps * max(spec.num_stages, 1))
    w *= sum(_TYPE_BYTES.get(t[1:], 4) for t in _pointer_types(spec))
    for v in spec.constexprs.values():
        if isinstance(v, int) and not isinstance(v, bool) and v > 1:
            w *= v
    return w


def fast_subset(pairs: Sequence[tuple]) -> list[tuple]:
    """A few specs per kernel that still exercise every dtype and constexpr value.

    ``pairs`` are ``(source, KernelSpec)``. Within each kernel the specs are taken
    heaviest first (see ``_weight``), keeping one only if it brings a pointer-dtype
    signature, constexpr value, warp count or stage count not seen yet for that kernel.
    So the worst case for spills and shared memory is always compiled, every dtype,
    block size and flag compiles at least once, and the count grows with the number of
    distinct values rather than with their product. The order of ``pairs`` is kept.
    """
    groups: dict[tuple, list[int]] = {}
    for k, (source, spec) in enumerate(pairs):
        groups.setdefault((source, getattr(spec.kernel, "__name__", repr(spec.kernel))), []).append(k)
    keep = set()
    for members in groups.values():
        seen: set = set()
        # Ties go to the spec with more flags on: more code paths, more live values.
        for k in sorted(members, key=lambda k: (-_weight(pairs[k][1]),
                                                -sum(v is True for v in pairs[k][1].constexprs.values()))):
            spec = pairs[k][1]
            values = {(n, repr(v)) for n, v in spec.constexprs.items()}
            values |= {("num_warps", spec.num_warps), ("num_stages", spec.num_stages),
                       ("pointers", _pointer_types(spec))}
            if not values <= seen:
                keep.add(k)
                seen |= values
    return [p for k, p in enumerate(pairs) if k in keep]


_START, _RESULT = "AOT-START ", "AOT-RESULT "


def _worker_env() -> dict:
    env = dict(os.environ)
    env["TRITON_INTERPRET"] = "0"
    # The worker must import this same copy of the package, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _worker(arch: int) -> int:
    """Worker process: compile the ``[source, index]`` items read from stdin, one JSON line each."""
    items = json.load(sys.stdin)
    loaded: dict[str, list] = {}
    for source, index in items:
        print(_START + json.dumps([source, index]), flush=True)
        if source not in loaded:
            loaded[source] = load_specs(source, arch)
        report = compile_spec(loaded[source][index], arch, source)
        print(_RESULT + json.dumps(asdict(report), default=str), flush=True)
    return 0


def _run_worker(items: list, specs: dict, arch: int) -> list[KernelReport]:
    # A compiler crash (an LLVM assertion, a segfault) kills the worker, not this
    # process: the item it was on is reported as failed and a new worker takes the rest.
    remaining, reports = list(items), []
    while remaining:
        run = subprocess.run(
            [sys.executable, "-m", "lstm_kernels.aot", "--arch", str(arch), "--worker"],
            input=json.dumps(remaining), capture_output=True, text=True, env=_worker_env(),
        )
        lines = run.stdout.splitlines()
        done = [KernelReport(**json.loads(x[len(_RESULT):])) for x in lines if x.startswith(_RESULT)]
        started = sum(x.startswith(_START) for x in lines)
        reports += done
        if len(done) == len(remaining):
            break
        tail = "\n".join(run.stderr.strip().splitlines()[-20:])
        last = tail.splitlines()[-1] if tail else ""
        why = f"compiler process exited with {run.returncode} on this kernel: {last}"
        failed = remaining[len(done):] if started == len(done) else [remaining[len(done)]]
        if started == len(done):  # died before starting any item: nothing to retry on
            why = f"worker process exited with {run.returncode} before compiling: {tail}"
        for source, index in failed:
            spec = specs[(source, index)]
            reports.append(KernelReport(
                module=source, name=getattr(spec.kernel, "__name__", repr(spec.kernel)), label=spec.label,
                num_warps=spec.num_warps, num_stages=spec.num_stages, arch=arch, error=why,
                extra={"traceback": tail},
            ))
        remaining = remaining[len(done) + len(failed):]
    return reports


def check_sources(sources: Sequence[str], arch, jobs: int = 2, fast: bool = False) -> list[KernelReport]:
    """Compile and measure every KernelSpec ``sources`` declare, for ``sm_<arch>``.

    Each source is a module name whose ``aot_specs(arch)`` lists specs, or
    ``path/to/file.py:function`` (a function of ``arch`` returning a list of KernelSpec).
    Compilation runs in ``jobs`` fresh worker processes with the interpreter off, so
    it works from any process (the test suite runs with TRITON_INTERPRET=1) and a
    compiler crash fails one kernel instead of the whole check. Reports keep spec order.
    ``fast`` compiles only :func:`fast_subset` of the specs.
    """
    arch = parse_arch(arch)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1; got {jobs}")
    sources = [_absolute(s) for s in sources]
    specs = {}
    for source in sources:
        for index, spec in enumerate(load_specs(source, arch)):
            specs[(source, index)] = spec
    items = list(specs)
    if fast:
        chosen = {id(spec) for _, spec in fast_subset([(key[0], spec) for key, spec in specs.items()])}
        items = [key for key in items if id(specs[key]) in chosen]
    slices = [items[k::jobs] for k in range(min(jobs, len(items)))]
    with ThreadPoolExecutor(max_workers=max(1, len(slices))) as pool:
        results = list(pool.map(lambda part: _run_worker(part, specs, arch), slices))
    # Round-robin slices back into spec order.
    ordered: list[KernelReport] = []
    for k in range(max((len(r) for r in results), default=0)):
        ordered += [r[k] for r in results if k < len(r)]
    return ordered


def _absolute(source: str) -> str:
    if ":" in source:
        path, func = source.rsplit(":", 1)
        return f"{os.path.abspath(path)}:{func}"
    return source


def _fmt(value) -> str:
    return "-" if value is None else str(value)


def _short(source: str) -> str:
    if ":" in source:  # path/to/file.py:function
        path, func = source.rsplit(":", 1)
        return f"{os.path.basename(path)}:{func}"
    # A tier's specs live in its package's aot_specs module: name the tier.
    return source.removesuffix(".aot_specs").rsplit(".", 1)[-1]


def format_table(reports: Sequence[KernelReport]) -> str:
    """The per-kernel report as aligned plain text."""
    head = ["kernel", "spec (dtype, blocks)", "warps", "stages", "regs", "spills B", "smem B", "s", "status"]
    rows = []
    for r in reports:
        problems = r.problems()
        rows.append([
            f"{_short(r.module)}.{r.name}" if r.module else r.name,
            r.label,
            str(r.num_warps),
            str(r.num_stages),
            _fmt(r.registers),
            _fmt(None if r.error else r.spills),
            _fmt(r.shared),
            f"{r.seconds:.1f}",
            "ok" if not problems else "FAIL: " + "; ".join(problems),
        ])
    widths = [max(len(h), *(len(row[k]) for row in rows)) if rows else len(h) for k, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def summary_line(reports: Sequence[KernelReport], arch: int) -> str:
    """One line: how many kernels were checked and how many failed which way."""
    failed = sum(r.error is not None for r in reports)
    spilling = sum(r.error is None and r.spills > 0 for r in reports)
    limit = SMEM_LIMIT[arch]
    over = sum(r.error is None and (r.shared or 0) > limit for r in reports)
    verdict = "OK" if all(r.ok for r in reports) else "FAILED"
    return (
        f"sm_{arch}: {len(reports)} kernels checked, {failed} failed to compile, {spilling} spill, "
        f"{over} over the {limit}-byte shared-memory limit: {verdict}"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lstm_kernels.aot", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True,
                        help="target GPU: sm_80 or sm_90 (also 80, 90, sm_86, sm_89)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="compile in this many worker processes (default 2)")
    parser.add_argument("--module", action="append", default=None,
                        help="check only this module (dotted name, or path/to/file.py:function); repeatable")
    parser.add_argument("--fast", action="store_true",
                        help="only a subset covering every dtype, block size, flag and warp count per kernel "
                             "(the heaviest spec of each always included); what CI runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        arch = parse_arch(args.arch)
    except ValueError as e:
        parser.error(str(e))
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1; got {args.jobs}")
    if args.worker:
        _require_compiled_mode()
        return _worker(arch)

    start = time.perf_counter()
    reports = check_sources(args.module or discover_modules(), arch, jobs=args.jobs, fast=args.fast)
    print(format_table(reports))
    for r in reports:
        if r.error is not None and r.extra.get("traceback"):
            print(f"\n{r.name} [{r.label}]:\n{r.extra['traceback']}", file=sys.stderr)
    print(summary_line(reports, arch) + (" [--fast subset]" if args.fast else "")
          + f" ({time.perf_counter() - start:.1f} s)")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    # Kernels must be built as compilable JIT functions, whatever the caller's
    # environment says (the test suite runs with TRITON_INTERPRET=1).
    os.environ["TRITON_INTERPRET"] = "0"
    sys.exit(main())

"""Start-up cost of a pair-rendering worker: what the forkserver imports before it forks workers.

Pair workers fork from a forkserver that preloads the rendering module (see
``jsqa.pairs.generate._pool_context``). Every module that import pulls in is CPU spent per
pairs run, so the module must stay light (numpy, soundfile, threadpoolctl; no pandas, pyarrow,
scipy, torch, yaml or the config module). This script prints, for the rendering module:

* the CPU seconds of importing it in a fresh interpreter (median of --repeats runs), against the
  CPU of importing numpy + soundfile + threadpoolctl alone (the floor);
* the wall time for a forkserver pool of 2 workers to return its first result;
* which heavy modules the worker has loaded (there should be none).

    python benchmarks/worker_startup.py [--module jsqa.pairs.render] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HEAVY = ("pandas", "pyarrow", "scipy", "torch", "yaml", "sklearn", "jsqa.config", "mlflow")

_PROBE = """
import json, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0 = cpu()
for name in {modules!r}:
    __import__(name)
t1 = cpu()
print(json.dumps({{"cpu": t1 - t0, "modules": sorted(sys.modules)}}))
"""

_POOL = """
import json, multiprocessing, sys, time
from concurrent.futures import ProcessPoolExecutor

def loaded(_):
    import sys
    return sorted(sys.modules)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", {module!r}, "threadpoolctl"])
    t0 = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        mods = pool.submit(loaded, 0).result()
    print(json.dumps({{"wall": time.perf_counter() - t0, "modules": mods}}))
"""


def _run(code: str) -> dict:
    # From a file, not -c: forkserver workers import the pool function from the main script.
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "probe.py"
        script.write_text(code)
        out = subprocess.run([sys.executable, str(script)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", default="jsqa.pairs.render", help="the module pair workers preload")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    floor = [_run(_PROBE.format(modules=["numpy", "soundfile", "threadpoolctl"]))["cpu"] for _ in range(args.repeats)]
    probes = [_run(_PROBE.format(modules=[args.module, "threadpoolctl"])) for _ in range(args.repeats)]
    cpu = [p["cpu"] for p in probes]
    pools = [_run(_POOL.format(module=args.module)) for _ in range(args.repeats)]
    heavy = sorted({m for m in pools[0]["modules"] for h in HEAVY if m == h or m.startswith(h + ".")})
    jsqa_mods = [m for m in pools[0]["modules"] if m.startswith("jsqa")]
    print(f"module: {args.module}")
    print(
        f"import CPU, median of {args.repeats}: {statistics.median(cpu) * 1000:.0f} ms "
        f"(floor numpy+soundfile+threadpoolctl {statistics.median(floor) * 1000:.0f} ms, "
        f"ratio {statistics.median(cpu) / statistics.median(floor):.2f}x)"
    )
    print(f"forkserver pool to first result, median: {statistics.median(p['wall'] for p in pools) * 1000:.0f} ms")
    print(f"modules in a worker: {len(pools[0]['modules'])}; jsqa: {', '.join(jsqa_mods)}")
    print(f"heavy modules in a worker: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Times f32 matrix products in numpy (and torch when it imports) on the shapes
`glora bench gemm` measures, with the same thread count, so that the two compare
on identical shapes.

    glora bench gemm MODEL.onnx --batch 8 --threads 2 --json gemm.json
    python3 examples/gemm_reference.py --from-json gemm.json
    python3 examples/gemm_reference.py --shapes 1576x384x1152,96x197x64x197 --threads 2

A shape is MxKxN (A is MxK, B is KxN, row-major) or BxMxKxN for a batch of B
products (numpy.matmul on [B,M,K] x [B,K,N]). Rates are 2*B*M*K*N / median time.
The thread count is set before numpy is imported (OMP_NUM_THREADS,
MKL_NUM_THREADS, OPENBLAS_NUM_THREADS), then with threadpoolctl when it is
installed, and with torch.set_num_threads. The script prints which BLAS each
library runs, and whether OPENBLAS_CORETYPE is set (it never changes it).
"""

import argparse
import json
import os
import sys
import time


def parse_shapes(text):
    shapes = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            dims = [int(d) for d in part.lower().replace("×", "x").split("x")]
        except ValueError:
            dims = []
        if len(dims) == 3:
            dims = [1] + dims
        if len(dims) != 4 or min(dims) <= 0:
            sys.exit(f"{part!r}: a shape is MxKxN or BxMxKxN with positive sizes")
        shapes.append(tuple(dims))
    return shapes


def shapes_from_json(path):
    with open(path) as f:
        doc = json.load(f)
    rows = doc.get("rows", [])
    return [(r["batch"], r["m"], r["k"], r["n"]) for r in rows], doc


def label(shape):
    b, m, k, n = shape
    return f"{b}×{m}x{k}x{n}" if b > 1 else f"{m}x{k}x{n}"


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def time_product(run, warmup, iters, min_sample=0.002):
    """Median seconds of one run; each timed sample repeats the product until it
    lasts `min_sample`, as `glora bench gemm` does."""
    t0 = time.perf_counter()
    run()
    for _ in range(warmup):
        run()
    one = (time.perf_counter() - t0) / (warmup + 1)
    reps = max(1, int(min_sample / max(one, 1e-9)) + 1)
    times = []
    for _ in range(max(1, iters)):
        t = time.perf_counter()
        for _ in range(reps):
            run()
        times.append((time.perf_counter() - t) / reps)
    return median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--shapes", help="comma-separated MxKxN or BxMxKxN")
    src.add_argument("--from-json", metavar="FILE", help="the file `glora bench gemm --json` writes")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads (default: the JSON file's thread count, else all cores)")
    ap.add_argument("--iters", type=int, default=10, help="timed samples per shape (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per shape (default 2)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch even when it imports")
    args = ap.parse_args()

    doc = None
    if args.from_json:
        shapes, doc = shapes_from_json(args.from_json)
    else:
        shapes = parse_shapes(args.shapes)
    threads = args.threads or (doc or {}).get("threads") or os.cpu_count()

    # Before numpy is imported: its BLAS reads these when it starts its pool.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print(f"OPENBLAS_CORETYPE is set: {coretype}" if coretype is not None
          else "OPENBLAS_CORETYPE is not set")

    import numpy as np

    print(f"numpy {np.__version__}, threads {threads}")
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(threads)
        for pool in threadpool_info():
            print("threadpoolctl: {internal_api} {version} ({architecture}), "
                  "{num_threads} threads, {filepath}".format(**{
                      k: pool.get(k) for k in
                      ("internal_api", "version", "architecture", "num_threads", "filepath")}))
    except ImportError:
        print("threadpoolctl not installed: threads set through the environment only; "
              "numpy's build configuration follows")
        try:
            np.show_config()
        except Exception as e:  # show_config's form differs between versions
            print(f"numpy.show_config failed: {e}")

    torch = None
    if not args.no_torch:
        try:
            import torch as _torch

            torch = _torch
            torch.set_num_threads(threads)
            print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
            blas = [l.strip() for l in torch.__config__.show().splitlines()
                    if "BLAS" in l or "MKL" in l or "oneDNN" in l or "CPU capability" in l]
            for line in blas:
                print(f"torch config: {line}")
        except ImportError:
            print("torch not importable: numpy only")

    rng = np.random.default_rng(0)
    rows = []
    head = f"{'shape':<18} {'numpy GFLOP/s':>14}" + (f" {'torch GFLOP/s':>14}" if torch else "")
    print(head)
    for shape in shapes:
        b, m, k, n = shape
        dims_a = (b, m, k) if b > 1 else (m, k)
        dims_b = (b, k, n) if b > 1 else (k, n)
        a = rng.standard_normal(dims_a, dtype=np.float32)
        bb = rng.standard_normal(dims_b, dtype=np.float32)
        out = np.empty((b, m, n) if b > 1 else (m, n), dtype=np.float32)
        flops = 2.0 * b * m * k * n
        t_np = time_product(lambda: np.matmul(a, bb, out=out), args.warmup, args.iters)
        row = {"shape": label(shape), "batch": b, "m": m, "k": k, "n": n,
               "numpy_gflops": flops / t_np / 1e9}
        line = f"{label(shape):<18} {row['numpy_gflops']:>14.1f}"
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(bb)
            to = torch.from_numpy(out)
            t_t = time_product(lambda: torch.matmul(ta, tb, out=to), args.warmup, args.iters)
            row["torch_gflops"] = flops / t_t / 1e9
            line += f" {row['torch_gflops']:>14.1f}"
        print(line)
        rows.append(row)
    if doc is not None:
        # Row by row: one shape can appear twice (a forward and an input gradient).
        print(f"{'shape':<18} {'what':<40} {'glora GFLOP/s':>14} {'numpy GFLOP/s':>14} "
              f"{'glora/numpy':>12}")
        for ours, r in zip(doc.get("rows", []), rows):
            g = ours["gflops"]
            print(f"{r['shape']:<18} {ours.get('what', ''):<40} {g:>14.1f} "
                  f"{r['numpy_gflops']:>14.1f} {g / r['numpy_gflops']:>12.2f}")


if __name__ == "__main__":
    main()

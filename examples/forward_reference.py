#!/usr/bin/env python3
"""Times one ONNX file's forward pass in onnxruntime, for `glora bench forward`.

Both sides run the same file on the same inputs with the same thread count:

    python3 examples/forward_reference.py torch-vit-s.onnx \
        --shape pixel_values=8x3x224x224 --threads 2 --save-inputs vit-in.safetensors
    glora bench forward torch-vit-s.onnx --input pixel_values=vit-in.safetensors --threads 2

Inputs are uniform in [-1, 1) for float inputs (seeded) and token ids in
[1000, 2000) for integer ones, as `glora bench` makes them; `--inputs FILE` reuses
a safetensors file instead. onnxruntime runs with all graph optimisations,
`intra_op_num_threads = --threads` and one inter-op thread, and prints the median,
min and max of `--iters` runs after `--warmup` runs, plus its version and the
execution provider.
"""

import argparse
import statistics
import sys
import time

import numpy as np


def parse_shape(spec):
    name, _, dims = spec.partition("=")
    if not name or not dims:
        raise argparse.ArgumentTypeError(f"--shape '{spec}' is not NAME=DxDx…")
    try:
        return name, [int(d) for d in dims.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape '{spec}': dimensions must be integers")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the ONNX file")
    p.add_argument("--shape", type=parse_shape, action="append", default=[],
                   help="NAME=DxDx… for an input whose shape the file leaves open (repeatable)")
    p.add_argument("--inputs", help="a safetensors file holding every input (overrides --shape)")
    p.add_argument("--save-inputs", help="write the generated inputs here, for glora bench forward --input")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--iters", type=int, default=10, help="timed runs (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    a = p.parse_args()

    try:
        import onnxruntime as ort
    except ImportError:
        sys.exit("onnxruntime is not installed: pip install onnxruntime")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])

    if a.inputs:
        from safetensors.numpy import load_file
        feeds = load_file(a.inputs)
    else:
        shapes = dict(a.shape)
        rng = np.random.default_rng(a.seed)
        feeds = {}
        for i in sess.get_inputs():
            dims = shapes.get(i.name)
            if dims is None:
                if not all(isinstance(d, int) for d in i.shape):
                    sys.exit(f"{a.model}: input '{i.name}' has shape {i.shape}; pass --shape {i.name}=…")
                dims = i.shape
            if "int" in i.type:
                feeds[i.name] = rng.integers(1000, 2000, size=dims).astype(np.int64)
            else:
                feeds[i.name] = rng.uniform(-1.0, 1.0, size=dims).astype(np.float32)
    if a.save_inputs:
        from safetensors.numpy import save_file
        save_file(feeds, a.save_inputs)

    for _ in range(a.warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    shapes = " ".join(f"{n}={list(v.shape)}" for n, v in feeds.items())
    print(f"model {a.model}  inputs {shapes}  threads {a.threads}")
    print(f"onnxruntime {ort.__version__} ({sess.get_providers()[0]})")
    print(f"{'runtime':<12} {'median ms':>10} {'min ms':>10} {'max ms':>10}")
    print(f"{'onnxruntime':<12} {statistics.median(times) * 1e3:>10.1f} "
          f"{min(times) * 1e3:>10.1f} {max(times) * 1e3:>10.1f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""compare.py - nnc against PyTorch on the same models, batches and data.

    python3 bench/compare.py [--quick] [--rounds N] [--time S] [--json [FILE]]

Workloads: a training step of the seed MLP (bench/models/mnist_mlp.nn, SGD at
batch 64), of the deep MLP (deep_mlp.nn, Adam at batch 128) and of LeNet-5
(lenet.nn, SGD with momentum at batch 64), and inference of both MLPs at
batch 1 and at batch 1024. PyTorch runs the same networks, initialisers,
optimizers and hyper-parameters (build_torch below).

Both sides take the same data: the random batches `nnc bench` makes
(uniform pixels in (0, 1), labels in range, from nnc's counter-based
generator, which torch_batches reproduces exactly), made before timing and
taken in turn. Both time the same way (time_calls, a copy of nnc bench's):
three warm-up calls, a calibration of a quarter of --time, then one timed run
of at least --time seconds; each side starts each round from freshly
initialised parameters and optimizer state.

The thread settings are searched on both sides: nnc with --threads 1 and 2;
PyTorch with torch.set_num_threads x OPENBLAS_NUM_THREADS of 1x1, 2x1 and
1x2 (never 2x2: OpenMP's and OpenBLAS's threads would fight over two
cores). nnc also runs without --threads, choosing its count per figure by
timing (cli/threads.c): that setting is reported beside the others (the
count it chose in each round, and its time against the best --threads),
not searched. A round measures every setting of every model once, nnc and PyTorch
alternating, in an order that rotates from round to round, and the machine's
sgemm rate (build/bench/sgemm_rate: 1024 x 1024 products through OpenBLAS) at
1 and 2 threads before each model's settings; the machine's rate is the
median of those measurements' best products. Each side's best setting is
the one with the lowest median over the rounds; the ratio of the two best
settings' speeds is taken round by round and given as min / median / max. The FLOPs of a call are those of its
matrix products (nnc bench's count, checked against one made from the
PyTorch modules); divided by the time of a call and by the sgemm rate at
as many threads as the setting uses, they give the fraction of the machine's
matrix-product rate each side reaches.

nnc is a fresh `nnc bench` process for every measurement (compile time is
not timed); PyTorch runs in one long-lived process per thread setting (this
same file with --worker), since OPENBLAS_NUM_THREADS is read when OpenBLAS
loads. Run it alone on the machine: wrap it in `flock /tmp/nnc-timing.lock`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = 1024  # the large inference batch (nnc bench --big's default)
BATCHES = 8  # different batches each figure takes in turn (nnc bench --batches)
BENCH_DATA_BYTES = 64 << 20  # nnc bench's cap on the data of one figure's batches

# model -> its .nn file, training batch, and the figures measured
MODELS = {
    "mnist_mlp": ("bench/models/mnist_mlp.nn", 64, ["train", "forward1", "big"]),
    "deep_mlp": ("bench/models/deep_mlp.nn", 128, ["train", "forward1", "big"]),
    "lenet": ("bench/models/lenet.nn", 64, ["train"]),
}

# the rows of the table, in order: (model, figure, label)
WORKLOADS = [
    ("mnist_mlp", "train", "seed MLP, train, batch 64, SGD"),
    ("deep_mlp", "train", "deep MLP, train, batch 128, Adam"),
    ("lenet", "train", "LeNet-5, train, batch 64, SGD momentum"),
    ("mnist_mlp", "forward1", "seed MLP, inference, batch 1"),
    ("mnist_mlp", "big", "seed MLP, inference, batch 1024"),
    ("deep_mlp", "forward1", "deep MLP, inference, batch 1"),
    ("deep_mlp", "big", "deep MLP, inference, batch 1024"),
]

NNC_THREADS = [1, 2]
NNC_DEFAULT = 0  # the setting without --threads: nnc chooses the count
TORCH_SETTINGS = [(1, 1), (2, 1), (1, 2)]  # (torch.set_num_threads, OPENBLAS_NUM_THREADS)

# nnc bench's random keys for the figures' batches (cli/cmd_bench.c)
FIGURE_KEY = {"train": 11, "forward1": 22, "big": 33}


def figure_batch(model, figure):
    return {"train": MODELS[model][1], "forward1": 1, "big": BIG}[figure]


def batch_count(model, figure):
    """How many batches nnc bench makes for a figure: --batches, within 64 MiB
    of inputs and targets (4 bytes an element)."""
    per_example = 784 + (1 if figure == "train" else 0)
    fit = max(1, BENCH_DATA_BYTES // (4 * per_example * figure_batch(model, figure)))
    return min(BATCHES, fit)


# ---------------------------------------------------------------- PyTorch side


def mix64(z, np):
    """SplitMix64's finaliser over uint64 arrays (runtime/rng.h)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def rand_bits(key, n, np):
    """nnrt_rand_bits(key, i) for i in [0, n)."""
    with np.errstate(over="ignore"):
        k = mix64(np.array([key], dtype=np.uint64), np)
        return mix64(k ^ np.arange(n, dtype=np.uint64), np) >> np.uint64(32)


def torch_batches(model, figure, np, torch):
    """The batches nnc bench makes for a figure (make_batches in
    cli/cmd_bench.c): batch j's argument a has key base + 1000 j + a, the
    arguments being the input x, then the labels y of a training step."""
    batch = figure_batch(model, figure)
    out = []
    for j in range(batch_count(model, figure)):
        key = FIGURE_KEY[figure] + 1000 * j
        bits = rand_bits(key, batch * 784, np)
        x = (((bits >> np.uint64(9)).astype(np.float64) + 0.5) / 8388608.0).astype(np.float32)
        x = torch.from_numpy(x.reshape((batch, 1, 28, 28) if model == "lenet" else (batch, 784)))
        if figure != "train":
            out.append((x,))
            continue
        with np.errstate(over="ignore"):
            y = (rand_bits(key + 1, batch, np) * np.uint64(10)) >> np.uint64(32)
        out.append((x, torch.from_numpy(y.astype(np.int64))))  # int64: cross_entropy's label type
    return out


def build_torch(model, torch):
    """The network and optimizer of bench/models/MODEL.nn, initialised as nnc
    initialises it: dense layers xavier-uniform unless init=he (normal, 2 /
    fan_in), convolutions he_normal, biases zero."""
    nn = torch.nn

    class Standardise(nn.Module):
        def forward(self, x):
            return (x - 0.2860) / 0.3530

    def dense(k, n, init="xavier"):
        layer = nn.Linear(k, n)
        if init == "he":
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
        return layer

    def conv(c, f, kernel, pad=0):
        layer = nn.Conv2d(c, f, kernel, padding=pad)
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(layer.bias)
        return layer

    if model == "mnist_mlp":
        net = nn.Sequential(dense(784, 10), nn.Sigmoid(), dense(10, 10))
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
    elif model == "deep_mlp":
        net = nn.Sequential(Standardise(), dense(784, 512, "he"), nn.ReLU(), dense(512, 256, "he"), nn.ReLU(),
                            dense(256, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    elif model == "lenet":
        net = nn.Sequential(Standardise(), conv(1, 6, 5, pad=2), nn.ReLU(), nn.MaxPool2d(2), conv(6, 16, 5), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Flatten(), dense(400, 120, "he"), nn.ReLU(), dense(120, 84, "he"),
                            nn.ReLU(), dense(84, 10))
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    else:
        raise ValueError(model)
    return net, opt


def torch_gemm_flops(net, model, figure, torch):
    """The FLOPs of a call's matrix products, counted from the modules: 2 per
    multiply-add of each dense layer and convolution forward; a training step
    adds the weight gradient of each and the input gradient of all but the
    first (whose input is data)."""
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o[0].numel() * m.weight[0].numel()))
             for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        net(torch.zeros((1, 1, 28, 28) if model == "lenet" else (1, 784)))
    for h in hooks:
        h.remove()
    forward = 2 * sum(sizes)
    per_example = 3 * forward - 2 * sizes[0] if figure == "train" else forward
    return per_example * figure_batch(model, figure)


def time_calls(call, n, seconds):
    """Seconds per call, as nnc bench's time_calls measures one run: three
    warm-up calls, calls for a quarter of `seconds` to calibrate, then one run
    of as many calls as should last `seconds`; call(i) takes batch i mod n."""
    nxt = 0
    for _ in range(3):
        call(nxt)
        nxt = (nxt + 1) % n
    t0 = time.perf_counter()
    calls = 0
    while time.perf_counter() - t0 < seconds / 4 or calls < 3:
        call(nxt)
        nxt = (nxt + 1) % n
        calls += 1
    per_run = int(calls * seconds / (time.perf_counter() - t0 + 1e-9)) + 1
    start = time.perf_counter()
    for _ in range(per_run):
        call(nxt)
        nxt = (nxt + 1) % n
    return (time.perf_counter() - start) / per_run


def worker(threads):
    """Answer one request a line on stdin: {"model", "figures", "time"} ->
    seconds per call and gemm FLOPs of each figure, from a fresh model."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    data = {}
    for line in sys.stdin:
        req = json.loads(line)
        model = req["model"]
        torch.manual_seed(1)
        net, opt = build_torch(model, torch)
        reply = {"torch_threads": torch.get_num_threads()}
        for figure in req["figures"]:
            if (model, figure) not in data:
                data[model, figure] = torch_batches(model, figure, np, torch)
            batches = data[model, figure]
            if figure == "train":
                net.train()

                def call(i):
                    x, y = batches[i]
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(net(x), y).backward()
                    opt.step()

                reply[figure] = time_calls(call, len(batches), req["time"])
            else:
                net.eval()
                with torch.inference_mode():
                    reply[figure] = time_calls(lambda i: torch.softmax(net(batches[i][0]), dim=1), len(batches),
                                               req["time"])
            reply[figure + "_flops"] = torch_gemm_flops(net, model, figure, torch)
        print(json.dumps(reply), flush=True)


class TorchWorker:
    """A PyTorch process at one thread setting."""

    def __init__(self, python, threads, blas):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(blas), OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--worker", str(threads)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, model, figures, seconds):
        self.proc.stdin.write(json.dumps({"model": model, "figures": figures, "time": seconds}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit("compare.py: the PyTorch process stopped (its error is above)")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


# ---------------------------------------------------------------- the comparison


# nnc bench's JSON key of the thread count a figure ran on
THREADS_KEY = {"train": "train_threads", "forward1": "forward1_threads", "big": "forward_big_threads"}


def run_nnc(nnc, model, threads, seconds):
    path, _, figures = MODELS[model]
    cmd = [nnc, "bench", os.path.join(ROOT, path), "--json", "--repeat", "1", "--time", str(seconds), "--batches",
           str(BATCHES), "--only", ",".join(figures)]
    if threads != NNC_DEFAULT:
        cmd += ["--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"compare.py: {' '.join(cmd)} failed:\n{r.stderr}")
    d = json.loads(r.stdout)
    out = {}
    for figure in figures:
        batch = figure_batch(model, figure)
        if figure == "train":
            out[figure] = d["train_step_us"] * 1e-6
            out[figure + "_flops"], n = d["gemm_flops"], d["train_batches"]
        elif figure == "forward1":
            out[figure] = d["forward1_us"] * 1e-6
            out[figure + "_flops"], n = d["forward1_gemm_flops"], d["forward1_batches"]
        else:
            out[figure] = batch / d["forward_big_samples_per_s"]
            out[figure + "_flops"], n = d["forward_big_gemm_flops"], d["forward_big_batches"]
        out[figure + "_threads"] = d[THREADS_KEY[figure]]
        if n != batch_count(model, figure):
            sys.exit(f"compare.py: nnc bench made {n} batches for {model} {figure}, PyTorch takes "
                     f"{batch_count(model, figure)}: cli/cmd_bench.c and batch_count disagree")
    return out


def run_sgemm(exe, seconds):
    r = subprocess.run([exe, "--json", "--threads", "1,2", "--time", str(seconds)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"compare.py: {exe} failed:\n{r.stderr}")
    return {str(x["threads"]): x["gflops_best"] for x in json.loads(r.stdout)["rates"]}


def setting_name(side, setting):
    if side == "nnc":
        return "nnc (chooses)" if setting == NNC_DEFAULT else f"nnc --threads {setting}"
    return f"torch {setting[0]} x OpenBLAS {setting[1]}"


def short_setting(name):
    """"nnc --threads 2" -> "2 threads", "torch 1 x OpenBLAS 2" -> "1 x 2"."""
    words = name.split()
    if words[0] == "nnc":
        if words[1] == "(chooses)":
            return "its choice"
        return f"{words[2]} thread{'s' if words[2] != '1' else ''}"
    return f"{words[1]} x {words[4]}"


def setting_threads(side, setting):
    return setting if side == "nnc" else max(setting)


def measure(args, nnc, sgemm):
    """All rounds: {"sgemm": [before each model's runs {threads: GFLOP/s}], "runs": {model:
    {setting name: [per round {figure: seconds, figure_flops: FLOPs}]}}}."""
    settings = []  # nnc and PyTorch alternating
    nnc_settings = NNC_THREADS + [NNC_DEFAULT]
    for i in range(max(len(nnc_settings), len(TORCH_SETTINGS))):
        if i < len(nnc_settings):
            settings.append(("nnc", nnc_settings[i]))
        if i < len(TORCH_SETTINGS):
            settings.append(("torch", TORCH_SETTINGS[i]))
    workers = {s: TorchWorker(args.python, *s) for s in TORCH_SETTINGS}
    runs = {m: {setting_name(*s): [] for s in settings} for m in MODELS}
    rates = []
    try:
        for r in range(args.rounds):
            t0 = time.time()
            for model in MODELS:
                rates.append(run_sgemm(sgemm, args.sgemm_time))
                # rotate the order so that no setting always runs first or last
                for side, setting in settings[r % len(settings):] + settings[:r % len(settings)]:
                    if side == "nnc":
                        out = run_nnc(nnc, model, setting, args.time)
                    else:
                        out = workers[setting].run(model, MODELS[model][2], args.time)
                    runs[model][setting_name(side, setting)].append(out)
            print(f"round {r + 1}/{args.rounds}: {time.time() - t0:.0f} s", file=sys.stderr)
    finally:
        for w in workers.values():
            w.close()
    return {"sgemm": rates, "runs": runs}, settings


def summarise(raw, settings):
    """Per workload: every setting's median, each side's best, the round-by-
    round ratio of the best two, and the fractions of the sgemm rate."""
    sgemm = {t: statistics.median(r[t] for r in raw["sgemm"]) for t in raw["sgemm"][0]}
    rows = []
    for model, figure, label in WORKLOADS:
        per = raw["runs"][model]
        medians = {setting_name(*s): statistics.median(x[figure] for x in per[setting_name(*s)]) for s in settings}
        best = {}
        for side in ("nnc", "torch"):
            # nnc's own choice is not a setting to search: it is compared with the best below
            side_settings = [s for s in settings if s[0] == side and s != ("nnc", NNC_DEFAULT)]
            best[side] = min(side_settings, key=lambda s: medians[setting_name(*s)])
        nnc_runs = per[setting_name(*best["nnc"])]
        torch_runs = per[setting_name(*best["torch"])]
        ratios = sorted(t[figure] / n[figure] for n, t in zip(nnc_runs, torch_runs))
        flops = nnc_runs[0][figure + "_flops"]
        torch_flops = torch_runs[0][figure + "_flops"]
        row = {
            "model": model,
            "figure": figure,
            "label": label,
            "batch": figure_batch(model, figure),
            "gemm_flops": flops,
            "torch_gemm_flops": torch_flops,
            "settings_median_s": medians,
            "speed_ratio": {"min": ratios[0], "median": statistics.median(ratios), "max": ratios[-1],
                            "rounds": ratios},
        }
        for side in ("nnc", "torch"):
            name = setting_name(*best[side])
            threads = setting_threads(*best[side])
            gflops = flops / medians[name] / 1e9
            row[side] = {"setting": name, "threads": threads, "median_s": medians[name],
                         "gflops": gflops, "fraction_of_sgemm": gflops / sgemm[str(threads)]}
        chooses = setting_name("nnc", NNC_DEFAULT)
        chosen = [x[figure + "_threads"] for x in per[chooses]]
        row["nnc_chooses"] = {"threads_per_round": chosen, "median_s": medians[chooses],
                              "time_vs_best": medians[chooses] / row["nnc"]["median_s"],
                              "rounds_on_best": sum(t == row["nnc"]["threads"] for t in chosen)}
        rows.append(row)
    return {"sgemm_gflops": sgemm, "rows": rows}


def speed(row, side):
    s = row[side]["median_s"]
    if row["figure"] == "forward1":
        return f"{s * 1e6:.1f} us"
    return f"{row['batch'] / s:,.0f} samples/s"


def markdown(summary, raw, args):
    rate = summary["sgemm_gflops"]
    out = ["| workload | nnc | PyTorch 1.13 | nnc speed / PyTorch (min / median / max) | "
           "nnc, % of sgemm | PyTorch, % of sgemm |",
           "|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        r = row["speed_ratio"]
        cells = [row["label"]]
        for side in ("nnc", "torch"):
            cells.append(f"{speed(row, side)} ({short_setting(row[side]['setting'])})")
        cells.append(f"{r['min']:.2f} / **{r['median']:.2f}** / {r['max']:.2f}")
        for side in ("nnc", "torch"):
            cells.append(f"{100 * row[side]['fraction_of_sgemm']:.1f} %")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Threads: nnc --threads; PyTorch torch.set_num_threads x OPENBLAS_NUM_THREADS. "
               "Speed ratio above 1: nnc is faster.")
    out.append(f"{args.rounds} rounds of {args.time} s runs; sgemm 1024 x 1024 through OpenBLAS: "
               f"{rate['1']:.1f} GFLOP/s on 1 thread, {rate['2']:.1f} on 2 "
               f"(median of {len(raw['sgemm'])} measurements). Load average (1 minute) at the start and the end: "
               f"{raw['load_average'][0]:.1f}, {raw['load_average'][1]:.1f} on {os.cpu_count()} cores.")
    return "\n".join(out)


def choice_table(summary):
    """nnc without --threads against its best --threads setting."""
    out = ["| workload | best --threads | count nnc chose, per round | rounds on the best | "
           "time, chosen / best |", "|---|---|---|---|---|"]
    for row in summary["rows"]:
        c = row["nnc_chooses"]
        counts = " ".join(str(t) for t in c["threads_per_round"])
        out.append(f"| {row['label']} | {row['nnc']['threads']} | {counts} | {c['rounds_on_best']} / "
                   f"{len(c['threads_per_round'])} | {c['time_vs_best']:.3f} |")
    return "\n".join(out)


def settings_table(summary, settings):
    names = [setting_name(*s) for s in settings]
    out = ["| workload | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in summary["rows"]:
        cells = []
        for n in names:
            s = row["settings_median_s"][n]
            best = n in (row["nnc"]["setting"], row["torch"]["setting"])
            text = f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"
            cells.append(f"**{text}**" if best else text)
        out.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def torch_python(asked):
    """An interpreter with PyTorch and NumPy: --python, this one, or Debian's
    (python3-torch), which a python3 of pyenv or a venv does not see."""
    import importlib.util
    if asked:
        return asked
    if importlib.util.find_spec("torch") and importlib.util.find_spec("numpy"):
        return sys.executable
    if os.access("/usr/bin/python3", os.X_OK):
        r = subprocess.run(["/usr/bin/python3", "-c", "import importlib.util as u; "
                            "exit(not (u.find_spec('torch') and u.find_spec('numpy')))"])
        if r.returncode == 0:
            return "/usr/bin/python3"
    sys.exit("compare.py: no Python with PyTorch and NumPy: apt-get install python3-torch, or name one with --python")


def main():
    ap = argparse.ArgumentParser(description="nnc against PyTorch on the same models, batches and data")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 0.1 s runs (under two minutes)")
    ap.add_argument("--rounds", type=int, help="rounds of every measurement (default 7, --quick 3)")
    ap.add_argument("--time", type=float, help="seconds a timed run lasts (default 0.4, --quick 0.1)")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="one JSON object, the summary and every raw figure: on stdout instead of the tables, "
                         "or into FILE beside them")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="nnc's build directory (default build/)")
    ap.add_argument("--python", help="the Python that runs PyTorch (default: this one, else /usr/bin/python3)")
    ap.add_argument("--models", help="comma-separated models to measure (default all: " + ",".join(MODELS) + ")")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    if args.models:
        keep = args.models.split(",")
        for m in keep:
            if m not in MODELS:
                ap.error(f"no model {m!r}; the models are {', '.join(MODELS)}")
        for m in list(MODELS):
            if m not in keep:
                del MODELS[m]
        WORKLOADS[:] = [w for w in WORKLOADS if w[0] in MODELS]
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.time = args.time or (0.1 if args.quick else 0.4)
    args.sgemm_time = 0.2 if args.quick else 0.5
    if args.rounds < 1 or args.time <= 0:
        ap.error("--rounds must be at least 1 and --time positive")
    nnc = os.path.join(args.build, "nnc")
    sgemm = os.path.join(args.build, "bench", "sgemm_rate")
    for exe in (nnc, sgemm):
        if not os.access(exe, os.X_OK):
            sys.exit(f"compare.py: no {exe}: build first (cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && "
                     "cmake --build build)")
    args.python = torch_python(args.python)
    start, load_before = time.time(), os.getloadavg()[0]
    raw, settings = measure(args, nnc, sgemm)
    raw["load_average"] = [load_before, os.getloadavg()[0]]
    summary = summarise(raw, settings)
    for row in summary["rows"]:
        if row["gemm_flops"] != row["torch_gemm_flops"]:
            print(f"compare.py: warning: {row['label']}: nnc counts {row['gemm_flops']} gemm FLOPs, the PyTorch "
                  f"modules {row['torch_gemm_flops']}: the two networks differ", file=sys.stderr)
    if args.json:
        doc = {"rounds": args.rounds, "time": args.time, "seconds": time.time() - start, **summary, "raw": raw}
        text = json.dumps(doc, indent=1) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            with open(args.json, "w") as f:
                f.write(text)
    if args.json != "-":
        print(markdown(summary, raw, args))
        print()
        print("Median time of a call at each setting (the best of each side in bold):")
        print()
        print(settings_table(summary, settings))
        print()
        print("nnc without --threads (it chooses the count per figure by timing) against its best --threads:")
        print()
        print(choice_table(summary))
        print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""repl_test.py - tests of `nnc repl`, one mode per ctest test:

  repl_test.py session NNC MODEL.nn   a scripted session from standard input:
                                      data, train, eval, set lr, a new layer,
                                      re-JIT, kept parameters, save, load, predict, plot
  repl_test.py pty NNC MODEL.nn       under a pseudo-terminal: line editing,
                                      history (also in $HOME/.nnc_history) and completion
  repl_test.py fuzz NNC MODEL.nn      1000 random lines (commands, garbage, partial
                                      statements) end in exit status 0, no crash or leak

Each runs in a temporary directory that is also $HOME."""
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


def tensor_block(out, name, nth):
    """The nth `show NAME` output: the statistics line and the slice rows."""
    blocks = re.findall(r"^%s : f32\[.*?\n(?:  .*\n)*" % re.escape(name), out, re.M)
    return blocks[nth] if nth < len(blocks) else None


def session(nnc, model, work):
    script = f"""
data limit 6000 val 1000
show h.W
train 1 epochs
eval
show h.W
set lr 0.2
set
h2 = dense(h, 16, act=relu)
logits = dense(h2, 10)
show h.W
train 10 steps
save {work}/ck.safetensors
show h2.W
train 5 steps
show h2.W
load-checkpoint {work}/ck.safetensors
show h2.W
predict 0
plot {work}/curves.svg
"""
    p = subprocess.run([nnc, "repl", "--strict", "-O1", "--threads", "1", model], input=script, text=True,
                       capture_output=True, cwd=work, timeout=120)
    out = p.stdout
    print(out)
    print(p.stderr, file=sys.stderr)
    check(p.returncode == 0, f"exit status {p.returncode}")
    lines = out.splitlines()
    # the lines that do not depend on floating point, in order
    expected = [
        "compiled mnist_mlp in",
        "data: 5000 training, 1000 validation, 10000 test examples",
        "lr 0.2",
        "kept: h.W h.b logits.W logits.b",
        "new: h2.W h2.b",
        "compiled mnist_mlp in",
        "kept: h.W h.b h2.W h2.b logits.b",
        "new: logits.W",
        "compiled mnist_mlp in",
        f"saved {work}/ck.safetensors",
        f"loaded {work}/ck.safetensors",
        "example  target     predicted  (top classes)",
        f"wrote {work}/curves.svg (3 points)",
    ]
    at = 0
    for line in lines:
        if at < len(expected) and line.startswith(expected[at]):
            at += 1
    check(at == len(expected), f"line {expected[at] if at < len(expected) else ''!r} missing or out of order")
    # one epoch on 5000 images learns something
    m = re.search(r"^epoch 1  loss [\d.]+  val loss [\d.]+  val acc ([\d.]+)", out, re.M)
    check(m and float(m.group(1)) > 0.45, "validation accuracy after one epoch > 0.45")
    m = re.search(r"^val:  val loss [\d.]+  val acc ([\d.]+)  \(1000 examples\)", out, re.M)
    check(m is not None, "eval on the validation set")
    check(re.search(r"^optimizer sgd  batch 64  seed 1  lr 0\.2$", out, re.M) is not None, "set shows lr 0.2")
    # training changed h.W; re-compiling with a new layer kept it bit for bit
    a, b, c = (tensor_block(out, "h.W", i) for i in range(3))
    check(a and b and a != b, "training changes h.W")
    check(b and b == c, "h.W unchanged by adding a layer")
    # the checkpoint brings back the state it saved
    d, e, f = (tensor_block(out, "h2.W", i) for i in range(3))
    check(d and e and d != e, "training changes h2.W")
    check(d and d == f, "load-checkpoint restores h2.W")
    # predict: the first test image (an ankle boot, class 9), probabilities of all 10 classes
    m = re.search(r"^0        9          (\d) +((?: ?\d:[\d.]+){10})", out, re.M)
    check(m is not None, "predict 0 prints the ten class probabilities")
    if m:
        total = sum(float(x.split(":")[1]) for x in m.group(2).split())
        check(abs(total - 1) < 0.01, f"probabilities sum to 1 (got {total})")
    # the charts of `nnc train --plot`: loss (train, validation) and accuracy
    # (validation), each curve a path through the 3 points with a marker on each
    svg = "{http://www.w3.org/2000/svg}"
    root = ET.parse(os.path.join(work, "curves.svg")).getroot()
    check(root.tag == svg + "svg", "the plot is SVG")
    texts = [t.text for t in root.iter(svg + "text")]
    for want in ["Loss", "Accuracy", "train", "validation", "epoch"]:
        check(want in texts, f"the plot has the text {want!r}")
    curves = [p.get("d") for p in root.iter(svg + "path") if p.get("d").strip()]
    check(len(curves) == 3 and all(d.count("M") + d.count("L") == 3 for d in curves),
          f"the plot has three curves of 3 points each (got {curves})")
    check(len(list(root.iter(svg + "circle"))) == 9, "a marker on each point of each curve")


class Pty:
    def __init__(self, argv, cwd, env):
        import pty
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.buf = b""

    def send(self, data):
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def expect(self, text, timeout=30):
        """Reads until `text` has appeared (past what earlier calls consumed)."""
        end = time.time() + timeout
        while text.encode() not in self.buf:
            left = end - time.time()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                print("TIMEOUT waiting for", repr(text), "output so far:", self.buf.decode(errors="replace"))
                return False
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                return text.encode() in self.buf
            self.buf += chunk
        self.buf = self.buf[self.buf.index(text.encode()) + len(text):]
        return True

    def wait(self, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                if select.select([self.fd], [], [], 0.1)[0]:
                    os.read(self.fd, 4096)
            except OSError:
                pass
        os.kill(self.pid, 9)
        return -9


def pty_session(nnc, model, work):
    env = dict(os.environ, HOME=work, TERM="xterm", INPUTRC="/dev/null")
    t = Pty([nnc, "repl", "-O1", model], work, env)
    check(t.expect("nnc> "), "prompt")
    steps = [
        # line editing: type the end of the line, Ctrl-A, the start
        ("how h.b\x01s\r", ["h.b : f32[10]"], "Ctrl-A then typing edits the line"),
        # history: the up arrow brings back the last line
        ("\x1b[A\r", ["h.b : f32[10]"], "up arrow recalls 'show h.b'"),
        # completion: a command name, then a tensor of the state
        ("sh\topt.l\t\r", ["opt.lr : f32[]  min 0.5"], "Tab completes 'sh' to show and 'opt.l' to opt.lr"),
        # arrows move inside the line: left twice, insert, right twice, type, backspace
        ("show .b\x1b[D\x1b[Dh\x1b[C\x1b[CX\x7f\r", ["h.b : f32[10]"], "arrows, insertion and backspace"),
        # file names complete too
        ("save ck.safetensors\r", ["saved ck.safetensors"], "save"),
        ("load-checkpoint ck.s\t\r", ["loaded ck.safetensors"], "Tab completes a file name"),
        # training on a terminal shows a live progress line, rewritten in place
        ("data limit 2000 val 200\r", ["data: 1800 training, 200 validation"], "data"),
        ("train 20 steps\r", ["\r\x1b[K  epoch 1  1280/1280  loss ", "\r\x1b[Kepoch 1 (part)  loss "],
         "the progress line, drawn last at the end, gives way to the result"),
        # Ctrl-C drops the line at the prompt, and stops training without ending the session
        ("show h.b\x03show h.W\r", ["h.W : f32[784, 10]"], "Ctrl-C at the prompt"),
        # (long enough to be still running when the Ctrl-C comes)
        ("train 100000 epochs\r", ["\r\x1b[K  epoch 2  "], "a long training run", False),
        ("\x03", ["interrupted"], "Ctrl-C stops training"),
    ]
    for keys, outputs, what, *prompt in steps:  # then the prompt again, unless (False) still running
        t.send(keys)
        for text in outputs + (["nnc> "] if prompt != [False] else []):
            check(t.expect(text), f"{what}: {text!r}")
    t.send("\x04")  # Ctrl-D: end of input
    code = t.wait()
    check(code == 0, f"exit status {code} after Ctrl-D")
    hist = [h.strip() for h in open(os.path.join(work, ".nnc_history")).read().splitlines()] if os.path.exists(
        os.path.join(work, ".nnc_history")) else []
    check("show h.b" in hist and "show opt.lr" in hist and "load-checkpoint ck.safetensors" in hist,
          f"history saved in $HOME/.nnc_history: {hist}")


def fuzz_lines(rng, n):
    words = ["load", "reload", "data", "train", "eval", "set", "show", "predict", "save", "load-checkpoint", "plot",
             "help", "h", "logits", "probs", "x", "y", "=", "dense", "(", ")", "[", "]", "{", "}", ",", "#", "\"",
             "act=relu", "act=sigmod", "10", "-1", "0", "1e99", "nan", "steps", "epochs", "lr", "batch", "optimizer",
             "adam", "momentum", "weight_decay", "validation", "test", "h.W", "opt.lr", "graph", "ir", "llvm", "kir",
             "source", "params", "limit", "val", "output", "loss", "param", "input", "target", "def", "model", "@",
             "relu(", "softmax(logits)", "f32[N,", "i32[N]", "\\", ";", "\t", "ÿ", "\x01", "z" * 300]
    statements = ["h = dense(x, 10, act=relu)", "h = dense(x, 12, act=tanh)", "h = dense(x, 10, act=sigmoid)",
                  "h2 = dense(h, 8, act=relu)", "logits = dense(h2, 10)", "logits = dense(h, 10)",
                  "train adam(lr=0.01) batch 32 epochs 1", "loss cross_entropy(logits, y)", "h = dense(x, 10,",
                  "act=relu)", "logits = dense(h, 10) + dense(h, 10)", "output probs = softmax(h)",
                  "param W : f32[3, 3]", "def f(a) { return relu(a) }", "metric acc = accuracy(logits, y)"]
    commands = ["train 1 steps", "train 2 steps", "eval", "eval test", "eval train", "show h.W", "show opt.lr",
                "show graph", "show ir shape", "show ir nope", "show kir", "show", "show params", "show data",
                "predict 0", "predict 99999999", "predict -3", "set lr 0.1", "set lr -1", "set lr abc",
                "set batch 16", "set batch 0", "set optimizer nope", "set seed 3", "set", "save ck.safetensors",
                "load-checkpoint ck.safetensors", "load-checkpoint missing.safetensors", "plot c.svg", "plot",
                "help", "help train", "help nope", "load /nonexistent.nn", "data /nonexistent", "data limit abc",
                "train 0", "train 1 fortnights"]
    # lines that re-compile or read the data set: a few of each keeps the test short
    expensive = ["reload", "set optimizer adam", "set optimizer sgd", "set momentum 0.5",
                 "set weight_decay 0.001"]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            out.append(rng.choice(commands))
        elif r < 0.48:
            out.append(rng.choice(statements))
        elif r < 0.50:
            out.append(rng.choice(expensive))
        else:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))))
    return out


def fuzz(nnc, model, work):
    rng = random.Random(6)
    lines = fuzz_lines(rng, 1000)
    # the expensive lines (data, train, compiles) run on a small data set
    script = "data limit 400 val 100\n" + "\n".join(lines) + "\n"
    env = dict(os.environ, HOME=work)
    p = subprocess.run([nnc, "repl", "-O0", "--threads", "1", model], input=script.encode(), capture_output=True,
                       cwd=work, env=env, timeout=600)
    err = p.stderr.decode(errors="replace")
    check(p.returncode == 0, f"exit status {p.returncode}; stderr ends: {err[-3000:]}")
    for bad in ("internal error", "AddressSanitizer", "LeakSanitizer", "runtime error", "Segmentation"):
        check(bad not in err, f"'{bad}' in stderr: {err[-3000:]}")
    check(err.count("error:") > 50, "the garbage was reported as errors")


def main():
    mode, nnc, model = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    with tempfile.TemporaryDirectory() as work:
        {"session": session, "pty": pty_session, "fuzz": fuzz}[mode](nnc, model, work)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()

#!/bin/sh
# ux.sh - tests of what nnc shows people, run by ctest (one kind per test):
#
#   ux.sh plot NNC FILE.nn            --plot writes well-formed SVG with every curve
#   ux.sh json NNC FILE.nn            --json: one parsable object per epoch, then the result
#   ux.sh bar NNC FILE.nn             on a terminal a progress bar is drawn, in logs it is not
#   ux.sh dot NNC FILE.nn             --emit-dot is accepted by Graphviz and shows fused kernels
#   ux.sh help NNC                    nnc help CMD == nnc CMD --help (repl too), --version names LLVM
#   ux.sh man NNC MAN_PAGE            the man page has no warnings and names every option
#   ux.sh suggest NNC                 misspelt commands and options get the nearest name
set -u
kind=$1 nnc=$2
shift 2
case $nnc in /*) ;; *) nnc=$(pwd)/$nnc ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# A tiny training run: 1 epoch on 1200 examples, 200 of them for validation.
quick="--limit 1200 --val 200 --epochs 1 --threads 1"

case $kind in
plot)
    file=$1
    "$nnc" train "$file" $quick --plot "$work/curves.svg" >"$work/out" 2>&1 || { cat "$work/out"; fail "nnc train"; }
    cat "$work/out"
    grep -q "^wrote $work/curves.svg" "$work/out" || fail "no 'wrote' line"
    ls "$work" | grep -q tmp && fail "a temporary file was left behind"
    python3 - "$work/curves.svg" <<'EOF' || exit 1
import sys, xml.dom.minidom
doc = xml.dom.minidom.parse(sys.argv[1])   # raises on malformed XML
svg = doc.documentElement
assert svg.tagName == "svg" and svg.getAttribute("xmlns") == "http://www.w3.org/2000/svg", "not an SVG root"
texts = [t.firstChild.data for t in doc.getElementsByTagName("text") if t.firstChild]
for want in ["Loss", "Accuracy", "train (per step)", "train (epoch mean)", "validation", "epoch", "loss", "accuracy"]:
    assert want in texts, "missing text %r in %r" % (want, texts)
# every curve drawn: the per-step loss is a path with one point per step
# (1000 examples / batch 64 = 16 steps), the per-epoch values are markers
paths = [p.getAttribute("d") for p in doc.getElementsByTagName("path")]
steps = max(d.count("L") + d.count("M") for d in paths)
assert steps == 16, "per-step loss has %d points, expected 16" % steps
circles = doc.getElementsByTagName("circle")
assert len(circles) == 4, "expected 4 per-epoch markers (train/val loss, train/val acc), got %d" % len(circles)
# the tick labels are numbers on both axes
nums = [t for t in texts if t.replace(".", "", 1).isdigit()]
assert len(nums) >= 8, "too few tick labels: %r" % nums
print("svg ok: %d paths, %d markers, %d tick labels" % (len(paths), len(circles), len(nums)))
EOF
    ;;
json)
    file=$1
    "$nnc" train "$file" --limit 1200 --val 200 --epochs 2 --threads 1 --json >"$work/out" 2>"$work/err" ||
        { cat "$work/out" "$work/err"; fail "nnc train --json"; }
    cat "$work/out"
    [ -s "$work/err" ] && { cat "$work/err"; fail "--json printed to standard error"; }
    python3 - "$work/out" <<'EOF' || exit 1
import sys, json
lines = open(sys.argv[1]).read().splitlines()
objs = [json.loads(l) for l in lines]          # every line is one JSON object
epochs = [o for o in objs if o["type"] == "epoch"]
assert len(epochs) == 2, "expected 2 epoch objects, got %d" % len(epochs)
for k, o in enumerate(epochs):
    for key in ["epoch", "epochs", "train_loss", "val_loss", "val_accuracy", "val_metrics", "samples_per_second", "seconds"]:
        assert key in o, "epoch object lacks %r: %r" % (key, o)
    assert o["epoch"] == k + 1 and o["epochs"] == 2, o
    assert 0 < o["train_loss"] < 10 and 0 <= o["val_accuracy"] <= 1 and o["samples_per_second"] > 0, o
assert epochs[1]["train_loss"] < epochs[0]["train_loss"], "the loss did not fall"
result = objs[-1]
assert result["type"] == "result" and len(objs) == 3, "the last line is not the result"
for key in ["test_loss", "test_accuracy", "test_examples", "epochs", "best_epoch", "seconds"]:
    assert key in result, "result lacks %r" % key
assert result["test_examples"] == 10000 and result["epochs"] == 2 and result["test_accuracy"] > 0.5, result
print("json ok")
EOF
    ;;
bar)
    file=$1
    command -v script >/dev/null || { echo "(script not installed: skipped)"; exit 0; }
    # under a pseudo-terminal: the bar, redrawn in place, then the epoch line
    script -qec "\"$nnc\" train \"$file\" $quick" /dev/null >"$work/tty" 2>&1 || { cat "$work/tty"; fail "under script"; }
    cat -v "$work/tty"
    grep -q "epoch 1/1 \[[#-]*\] .*samples/s  loss [0-9.]*  ETA" "$work/tty" || fail "no progress bar on a terminal"
    tr '\r' '\n' <"$work/tty" | grep -q "^.*epoch 1/1  loss [0-9.]*  val loss" || fail "no epoch line on a terminal"
    # in a log: plain lines only
    "$nnc" train "$file" $quick >"$work/log" 2>&1 || { cat "$work/log"; fail "nnc train"; }
    grep -q "$(printf '\r')" "$work/log" && fail "a carriage return in a log"
    grep -q "ETA" "$work/log" && fail "a progress bar in a log"
    grep -q "^epoch 1/1  loss" "$work/log" || fail "no epoch line in a log"
    # --quiet: the final scores alone
    "$nnc" train "$file" $quick --quiet >"$work/quiet" 2>&1 || { cat "$work/quiet"; fail "nnc train --quiet"; }
    cat "$work/quiet"
    [ "$(wc -l <"$work/quiet")" -eq 1 ] && grep -q "^test loss [0-9.]*  test acc" "$work/quiet" ||
        fail "--quiet printed more than the final scores"
    echo "bar ok"
    ;;
dot)
    file=$1
    command -v dot >/dev/null || fail "Graphviz's dot is not installed (scripts/setup.sh installs it)"
    "$nnc" "$file" --emit-dot -o "$work/g.dot" || fail "nnc --emit-dot"
    dot -Tsvg "$work/g.dot" -o "$work/g.svg" 2>"$work/err" || { cat "$work/err"; fail "dot rejected the graph"; }
    [ -s "$work/err" ] && { cat "$work/err"; fail "dot warned"; }
    python3 -c 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])' "$work/g.svg" || fail "dot's SVG"
    grep -q 'subgraph cluster_a ' "$work/g.dot" || fail "no forward cluster"
    grep -q 'subgraph cluster_b ' "$work/g.dot" || fail "no training cluster"
    n=$(grep -c 'subgraph cluster_b_fused_[0-9]* ' "$work/g.dot")
    [ "$n" -ge 1 ] || fail "no fused kernel shown as a cluster"
    grep -q 'label="fused kernel ([0-9]* ops)"' "$work/g.dot" || fail "no fused kernel label"
    grep -q 'shape=box style="filled,rounded" fillcolor="#fdd0a2"' "$work/g.dot" || fail "params not drawn as such"
    grep -q 'shape=invhouse' "$work/g.dot" || fail "inputs not drawn as such"
    grep -q -- '-> b[0-9]* \[label="f32\[N,' "$work/g.dot" || fail "no shapes on the edges"
    # with fusion off there is nothing to box
    "$nnc" "$file" --emit-dot --disable-pass=fuse -o "$work/nofuse.dot" || fail "--disable-pass=fuse"
    grep -q 'label="fused kernel' "$work/nofuse.dot" && fail "fused kernels with fusion disabled"
    echo "dot ok: $n fused clusters in the training step"
    ;;
help)
    for c in compile train eval predict tune check bench repl; do
        "$nnc" help $c >"$work/a" || fail "nnc help $c"
        "$nnc" $c --help >"$work/b" || fail "nnc $c --help"
        cmp -s "$work/a" "$work/b" || { diff "$work/a" "$work/b"; fail "nnc help $c differs from nnc $c --help"; }
        grep -q "^usage: nnc" "$work/a" || fail "no usage line for $c"
    done
    "$nnc" --help | grep -q "^usage: nnc" || fail "nnc --help"
    "$nnc" --version | grep -Eq '^nnc [0-9]+\.[0-9]+\.[0-9]+ \(LLVM [0-9]+\.[0-9]+\.[0-9]+\)$' || fail "nnc --version"
    "$nnc" --version
    echo "help ok"
    ;;
man)
    page=$1
    if command -v groff >/dev/null; then
        groff -man -ww -z "$page" 2>"$work/err" && ! [ -s "$work/err" ] || { cat "$work/err"; fail "groff warned"; }
    fi
    if command -v man >/dev/null; then
        man --warnings -l "$page" 2>"$work/err" >/dev/null && ! [ -s "$work/err" ] || { cat "$work/err"; fail "man warned"; }
    fi
    # every long option of every command's help is in the page
    sed 's/\\-/-/g' "$page" >"$work/page"
    for c in compile train eval predict tune check bench repl; do
        for opt in $("$nnc" help $c | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
            grep -q -- "$opt" "$work/page" || fail "the man page does not mention $c's $opt"
        done
    done
    echo "man ok"
    ;;
suggest)
    expect() { # expected-first-line command...
        want=$1
        shift
        "$@" >/dev/null 2>"$work/err"
        status=$?
        [ $status -eq 2 ] || { cat "$work/err"; fail "'$*' exited with $status, not 2"; }
        got=$(head -n 1 "$work/err")
        [ "$got" = "$want" ] || fail "'$*' said '$got', expected '$want'"
        echo "$got"
    }
    cd "$work"
    expect "nnc: error: unknown command 'trian', and no file of that name; did you mean 'train'?" "$nnc" trian x.nn
    expect "nnc: error: no help for 'bnech'; did you mean 'bench'?" "$nnc" help bnech
    expect "nnc: error: unknown option '--epoch-count'" "$nnc" train --epoch-count 2 x.nn
    expect "nnc: error: unknown option '--epcohs'; did you mean '--epochs'?" "$nnc" train --epcohs 2 x.nn
    expect "nnc: error: unknown option '-epochs'; did you mean '--epochs'?" "$nnc" train -epochs 2 x.nn
    expect "nnc: error: unknown option '--emit-lvm'; did you mean '--emit-llvm'?" "$nnc" x.nn --emit-lvm
    expect "nnc: error: option '--lr' needs a value" "$nnc" train x.nn --lr
    expect "nnc: error: option '--json' takes no value" "$nnc" train --json=yes x.nn
    expect "nnc: error: unknown pass 'autodif'; did you mean 'autodiff'? (passes: shape derive autodiff optimizer simplify, or all)" \
        "$nnc" x.nn --print-after=autodif
    expect "nnc: error: unknown option '--sed'; did you mean '--seed'?" "$nnc" repl --sed 2
    expect "nnc: error: --disable-pass: unknown transformation 'fusion'; did you mean 'fuse'? (simplify, fuse, memplan, coalesce, all)" \
        "$nnc" x.nn --disable-pass=fusion
    echo "suggest ok"
    ;;
*)
    echo "ux.sh: unknown test kind $kind" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Time the megakernel of two source trees in one GPU session, alternating old/new twice so
# drift shows: scripts/compare_trees.sh OLD_TREE OUT_DIR [MODELS] [TOKENS]
# OLD_TREE holds an eventkernel/ package (e.g. `git archive <commit> eventkernel | tar -x -C
# build/old`); the new tree is this checkout. Each run is `eventkernel bench` (floor only)
# writing OUT_DIR/<old|new>-<round>.json; a table of the eventkernel rows is printed last.
set -euo pipefail
old=$(cd "$1" && pwd); out=$2; models=${3:-llama-3.2-1b,qwen3-8b}; tokens=${4:-1,16}
new=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for round in 1 2; do
  for side in old new; do
    tree=$old; [ "$side" = new ] && tree=$new
    (cd "$tree" && PYTHONPATH=. python3 -m eventkernel.serve.cli bench --quick \
      --models "$models" --tokens "$tokens" --contexts 512 --baselines floor \
      --out "$out/$side-$round.json" > "$out/$side-$round.log" 2>&1) || {
        echo "$side round $round failed"; tail -20 "$out/$side-$round.log"; exit 1; }
  done
done
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = {}
for f in sorted(out.glob("*.json")):
    side, rnd = f.stem.split("-")
    for r in json.loads(f.read_text())["results"]:
        if r.get("system") == "eventkernel":
            key = (r["model"], r["num_tokens"])
            rows.setdefault(key, {})[f"{side}{rnd}"] = r["median_ms"]
print(f"{'model':<14}{'tokens':>7}{'old1':>9}{'new1':>9}{'old2':>9}{'new2':>9}{'new/old':>9}")
for (m, t), v in sorted(rows.items()):
    o = min(v.get("old1", 1e9), v.get("old2", 1e9))
    n = min(v.get("new1", 1e9), v.get("new2", 1e9))
    print(f"{m:<14}{t:>7}" + "".join(f"{v.get(k, float('nan')):>9.3f}" for k in
          ("old1", "new1", "old2", "new2")) + f"{n / o:>9.3f}")
PY

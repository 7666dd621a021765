"""Draws the load-generator chart of BENCHMARKS.md from `RESULT` lines.

    python benches/chart.py benches/results/loadgen.txt benches/results/loadgen.png

Two panels against the subscriber count, one line per target and scenario (bare, openchatd, janus): the
server's CPU (cores busy: openchatd's shard thread, all of Janus) and the loss. Runs the
generator limited (valid=false) are drawn hollow and left out of the lines.
"""

import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def parse(path):
    """RESULT lines as dicts of their key=value fields (numbers converted)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("RESULT "):
                continue
            row = {}
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                try:
                    row[key] = float(value)
                except ValueError:
                    row[key] = value
            rows.append(row)
    if not rows:
        raise SystemExit(f"{path}: no RESULT lines")
    return rows


def main(source, target):
    rows = parse(source)
    series = defaultdict(list)
    for row in rows:
        series[(row["target"], row["scenario"])].append(row)
    fig, (cpu, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (name, scenario), points in sorted(series.items()):
        points.sort(key=lambda r: r["subscribers"])
        valid = [p for p in points if p.get("valid") == "true"]
        invalid = [p for p in points if p.get("valid") != "true"]
        label = f"{name} ({scenario})"
        for axis, key in ((cpu, "server_cpu"), (loss, "loss_pct")):
            line = axis.plot([p["subscribers"] for p in valid], [p[key] for p in valid], marker="o", label=label)
            if invalid:
                axis.scatter(
                    [p["subscribers"] for p in invalid],
                    [p[key] for p in invalid],
                    facecolors="none",
                    edgecolors=line[0].get_color(),
                    label=f"{label}, generator-bound",
                )
    cpu.set_title("Server CPU (cores busy) vs subscribers")
    cpu.set_xlabel("subscribers")
    cpu.set_ylabel("cores")
    loss.set_title("Loss vs subscribers")
    loss.set_xlabel("subscribers")
    loss.set_ylabel("loss %")
    loss.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="0.5 % target")
    for axis in (cpu, loss):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target} from {len(rows)} RESULT lines")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])

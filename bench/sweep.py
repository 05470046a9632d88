"""Latency against load: bench.load at a series of arrival rates, and a plot of the result.

    python -m bench.sweep [--rates 25,50,100,150,200] [--seconds 30] [--agents 2000]
                          [--png docs/performance-sweep.png] [--json FILE]

Each rate is a separate `python -m bench.load` process (its own host, data directory and
generator), at the standard preset's shape: 10 messages per second for every arrival per
second, 2,000 agents. The plot shows p50 and p99 of arrival->offer and customer
message->agent on a log scale, and the host's CPU share, against the arrival rate.
Needs matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

MESSAGES_PER_ARRIVAL = 10.0  # the standard preset: 2,000 messages/s at 200 arrivals/s


def measure(rate: float, seconds: float, agents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="inbox-sweep-") as tmp:
        out = Path(tmp) / "report.json"
        argv = [
            sys.executable, "-m", "bench.load", "--preset", "standard",
            "--agents", str(agents), "--rate", str(rate),
            "--messages-per-s", str(rate * MESSAGES_PER_ARRIVAL),
            "--seconds", str(seconds), "--json", str(out),
        ]  # fmt: skip
        print(f"rate {rate:g}/s ...", flush=True)
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        report: dict[str, Any] = json.loads(out.read_text())
    return report


def plot(points: list[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [p["rate"] for p in points]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    for name, label, color in (
        ("arrival_to_offer", "arrival → offer", "tab:blue"),
        ("customer_to_agent", "customer message → agent", "tab:orange"),
    ):
        ax.plot(rates, [p["latency_ms"][name]["p50"] for p in points], "o--", color=color,
                label=f"{label}, p50")  # fmt: skip
        ax.plot(rates, [p["latency_ms"][name]["p99"] for p in points], "o-", color=color,
                label=f"{label}, p99")  # fmt: skip
    ax.axhline(5.0, color="grey", linewidth=0.8, linestyle=":")
    ax.annotate("5 ms target", (rates[0], 5.0), textcoords="offset points", xytext=(0, 4),
                color="grey", fontsize=8)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("customer arrivals per second (messages/s = 10 x arrivals/s), 2,000 agents")
    ax.set_ylabel("latency, ms (log scale)")
    cpu = ax.twinx()
    cpu.plot(rates, [p["host"].get("cpu_share", 0.0) for p in points], "s:", color="tab:green",
             label="host CPU (cores)")  # fmt: skip
    cpu.set_ylabel("host CPU, cores")
    cpu.set_ylim(0, 1.2)
    lines = ax.get_legend_handles_labels()
    more = cpu.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    ax.set_title("inbox-tui --server on 2 vCPUs: latency against load (bench.sweep)")
    fig.tight_layout()
    fig.savefig(png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rates", default="25,50,100,150,200")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--png", type=Path, default=Path("docs/performance-sweep.png"))
    parser.add_argument("--json", type=Path, help="write every run's report here")
    args = parser.parse_args(argv)
    points = []
    for rate in (float(r) for r in args.rates.split(",")):
        report = measure(rate, args.seconds, args.agents)
        report["rate"] = rate
        points.append(report)
        lat = report["latency_ms"]
        print(
            f"  arrival->offer p50 {lat['arrival_to_offer']['p50']} p99 "
            f"{lat['arrival_to_offer']['p99']} ms; customer->agent p50 "
            f"{lat['customer_to_agent']['p50']} p99 {lat['customer_to_agent']['p99']} ms; "
            f"host {report['host'].get('cpu_share')} cores; errors {report['errors'] or 'none'}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(points, indent=2))
    plot(points, args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Summarises a `loadtest/bench.sh` run as Markdown, and splices it into BENCHMARKS.md.

  bench-summary.py --out DIR [--quick 0|1]     the summary of the run in DIR, on stdout
  bench-summary.py --splice BENCHMARKS.md --from SUMMARY.md
                                               replaces the text between the markers

Each scenario script prints its own table with the ratios against Mosquitto; the
summary keeps those tables verbatim, with the exact command that produced them,
the machine and the kernel settings, so every figure says where it comes from.
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys

BEGIN = "<!-- bench.sh: generated, do not edit by hand -->"
END = "<!-- bench.sh: end -->"
ORDER = ["connect", "scale", "held", "pubsub", "downlink"]
TITLES = {
    "connect": "Connection storm and idle hold, same N for every broker",
    "scale": "The paper's experiment scaled to this host: 200,000 connections",
    "held": "Concurrent connections held (target 1,000,000)",
    "pubsub": "Publish/subscribe throughput and latency",
    "downlink": "Downlink: Redis stream → distributor → handlers → devices",
}


def machine():
    cpus = os.cpu_count()
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = ""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{cpus} vCPU ({model}){mem}, Linux {platform.release()}, commit {commit or 'unknown'}"


def result_block(text):
    """The scenario script's summary: from its '=== summary' line when it has one."""
    lines = text.rstrip().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("=== summary"):
            return "\n".join(lines[i:])
    return "\n".join(lines[-60:])


def summarise(out, quick):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Run of {now} ({'make bench-quick' if quick else 'make bench'}): {machine()}.")
    print("Other jobs may have been running on the host; every table below comes from one")
    print("run, with throng and Mosquitto measured one after the other.\n")
    kernel = os.path.join(out, "kernel.txt")
    if os.path.exists(kernel):
        print("Kernel settings (set by `loadtest/bench.sh` where permitted):\n")
        print("```")
        print(open(kernel).read().rstrip())
        print("```\n")
    for name in ORDER:
        cmd_path = os.path.join(out, f"{name}.cmd")
        if not os.path.exists(cmd_path):
            continue
        title = TITLES[name] + (" (smoke run: small counts)" if quick else "")
        print(f"### {title}\n")
        print("```sh")
        print(open(cmd_path).read().strip())
        print("```\n")
        out_path = os.path.join(out, f"{name}.out")
        text = open(out_path).read() if os.path.exists(out_path) else ""
        if not text.strip():
            err = os.path.join(out, f"{name}.err")
            tail = open(err).read().strip().splitlines()[-10:] if os.path.exists(err) else []
            print("No result: the scenario failed.\n")
            if tail:
                print("```")
                print("\n".join(tail))
                print("```\n")
            continue
        print("```")
        print(result_block(text))
        print("```\n")


def splice(path, summary_path):
    text = open(path).read()
    summary = open(summary_path).read().rstrip()
    section = f"{BEGIN}\n{summary}\n{END}"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n## Full run (`make bench`)\n\n" + section + "\n"
    open(path, "w").write(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--quick", default="0")
    parser.add_argument("--splice")
    parser.add_argument("--from", dest="source")
    args = parser.parse_args()
    if args.splice:
        splice(args.splice, args.source)
    elif args.out:
        summarise(args.out, args.quick == "1")
    else:
        parser.error("--out or --splice is required")


if __name__ == "__main__":
    sys.exit(main())

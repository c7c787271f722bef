#!/usr/bin/env python3
"""Writes the bench report: DIR/README.md and DIR/*.png from what tools/bench.sh left in DIR/raw/.

    tools/bench/bench_report.py DIR [--no-plots]

Reads raw/machine.txt, raw/<binary>.json (tools/bench/report.h's --report_json),
raw/etsredis_benchmark-<i>.json, raw/otp-<group>-<i>.txt (bench/otp/otp_bench.erl's key=value
lines) and raw/samples/*.samples (latencies in ns, one per line). Every figure is the median of
its runs; the spread is (max - min) / median over the runs. The main table pairs etsmgr's figures
with their OTP counterparts (PAIRS); a ratio above 1 means etsmgr is better. --no-plots skips
matplotlib (the fixture test runs without it).
"""

import fnmatch
import glob
import json
import os
import platform
import re
import statistics
import sys

# (what, etsmgr (binary, benchmark pattern, counter), OTP (figure, counter), better, unit, note)
PAIRS = [
    ("gen_server call round trip", ("process_benchmark", "BM_CallRoundTrip*", "items_per_second"),
     ("gen_server_call", "items_per_second"), "higher", "/s", "etsmgr: Call<int> of an Add request"),
    ("recovery of a killed owner, p50",
     ("manager_benchmark", "BM_RecoveryAfterOwnerKill*", "p50_us"),
     ("recovery_after_owner_kill", "p50_us"), "lower", "us",
     "etsmgr through its table manager; OTP through a plain heir process. OTP's supervisor "
     "keeps every restart of the last period (1 s) in a list it walks on each restart, so over "
     "20k back-to-back kills its restarts slow down (etsmgr's supervisor does not)"),
    ("recovery of a killed owner, p99",
     ("manager_benchmark", "BM_RecoveryAfterOwnerKill*", "p99_us"),
     ("recovery_after_owner_kill", "p99_us"), "lower", "us", ""),
    ("update_counter, one key, 1 thread / process",
     ("table_benchmark", "BM_UpdateCounterOneKey*threads:1", "items_per_second"),
     ("update_counter_one_key_1_procs", "items_per_second"), "higher", "/s", ""),
    ("update_counter, one key, 2 threads / processes",
     ("table_benchmark", "BM_UpdateCounterOneKey*threads:2", "items_per_second"),
     ("update_counter_one_key_2_procs", "items_per_second"), "higher", "/s", ""),
    ("set insert, 1M random keys", ("table_benchmark", "BM_SetInsert1M*", "items_per_second"),
     ("set_insert_1m", "items_per_second"), "higher", "/s", ""),
    ("set lookup, 1M random keys, 1 thread",
     ("table_benchmark", "BM_SetLookup1M*threads:1", "items_per_second"),
     ("set_lookup_1m", "items_per_second"), "higher", "/s", ""),
    ("memory per entry, 1M-entry set", ("table_benchmark", "BM_MemoryPerEntry*", "bytes_per_entry"),
     ("memory_per_entry", "bytes_per_entry"), "lower", "B",
     "etsmgr: heap growth; OTP: erlang:memory(ets) growth"),
    ("spawn_link + kill + exit signal",
     ("process_benchmark", "BM_SpawnLinkKillExitSignal*", "items_per_second"),
     ("spawn_link_kill_exit", "items_per_second"), "higher", "/s", ""),
    ("ping-pong round trips, one scheduler",
     ("process_benchmark", "BM_PingPongOneScheduler*", "items_per_second"),
     ("ping_pong_one_scheduler", "items_per_second"), "higher", "/s", ""),
    ("ping-pong round trips, across two schedulers",
     ("executor_benchmark", "BM_CrossSchedulerPingPong*", "items_per_second"),
     ("ping_pong_two_schedulers", "items_per_second"), "higher", "/s",
     "etsmgr: two plain tasks through WaitSlots (no process-level cross-scheduler ping-pong "
     "is measured); OTP: two processes bound to schedulers 1 and 2"),
]

PLACEHOLDER = "-"


def read_key_values(path):
    values = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep:
                    values[key] = value
    return values


def spread(values):
    """(max - min) / median of a figure's runs; None for a single run or a zero median."""
    med = statistics.median_low(values)
    if len(values) < 2 or med == 0:
        return None
    return (max(values) - min(values)) / abs(med)


def load_cpp(raw):
    """binary -> its --report_json document."""
    binaries = {}
    for path in sorted(glob.glob(os.path.join(raw, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        if "figures" in doc:
            binaries[doc.get("binary") or os.path.basename(path)[:-5]] = doc
    return binaries


def load_etsredis(raw):
    """(server, pipeline, test) -> {"rps": [runs], "p99_ms": [...], ...}."""
    figures = {}
    for path in sorted(glob.glob(os.path.join(raw, "etsredis_benchmark-*.json"))):
        with open(path) as f:
            doc = json.load(f)
        for r in doc["results"]:
            entry = figures.setdefault((r["server"], r["pipeline"], r["test"]), {})
            for key in ("rps", "p50_ms", "p99_ms", "rps_ratio", "p99_ratio"):
                entry.setdefault(key, []).append(r[key])
    return figures


def load_otp(raw):
    """((figure, counter) -> (unit, [runs]), the info line's fields)."""
    figures, info = {}, {}
    for path in sorted(glob.glob(os.path.join(raw, "otp-*.txt"))):
        with open(path) as f:
            for line in f:
                fields = dict(re.findall(r"(\w+)=(\S+)", line))
                if line.startswith("info "):
                    info = fields
                elif "figure" in fields and "value" in fields:
                    key = (fields["figure"], fields["counter"])
                    unit, runs = figures.setdefault(key, (fields.get("unit", ""), []))
                    runs.append(float(fields["value"]))
    return figures, info


def load_samples(raw, name):
    path = os.path.join(raw, "samples", name + ".samples")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line) for line in f if line.strip()]


def cpp_measurement(binaries, binary, pattern, counter):
    """The first measurement of `binary` whose benchmark matches `pattern` and has `counter`."""
    doc = binaries.get(binary)
    if doc is None:
        return None
    for m in doc["measurements"]:
        if m["counter"] == counter and fnmatch.fnmatchcase(m["benchmark"], pattern):
            return m
    return None


def fmt(value, unit=""):
    if value is None:
        return PLACEHOLDER
    if abs(value) >= 1e6:
        text = "%.3gM" % (value / 1e6)
    elif abs(value) >= 1e4:
        text = "%.3gk" % (value / 1e3)
    elif abs(value) >= 1e3:
        text = "%.0f" % value
    else:
        text = "%.3g" % value
    if unit in ("x", "/s"):
        return text + unit
    return text + (" " + unit if unit else "")


def fmt_spread(s):
    return PLACEHOLDER if s is None else "%.0f%%" % (100 * s)


def machine_section(machine, otp_info, spreads):
    cpu = "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    lines = [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        "| CPU | %s |" % cpu,
        "| cores | %d |" % (os.cpu_count() or 0),
        "| kernel | %s %s |" % (platform.system(), platform.release()),
        "| started | %s |" % machine.get("started", PLACEHOLDER),
        "| commit | %s |" % machine.get("commit", PLACEHOLDER),
        "| load average before / after | %s / %s |" % (machine.get("loadavg_before", PLACEHOLDER),
                                                      machine.get("loadavg_after", PLACEHOLDER)),
        "| repetitions | %s (each figure: the median of the runs, each in a fresh process) |" %
        machine.get("repetitions", PLACEHOLDER),
    ]
    if otp_info:
        lines.append("| Erlang/OTP | %s (erts %s, %s schedulers) |" % (
            otp_info.get("otp_release"), otp_info.get("erts"), otp_info.get("schedulers")))
    measured = sorted(s for s in spreads if s is not None)
    lines.append("")
    if measured:
        lines.append(
            "Noise: the spread of a figure is (max - min) / median over its runs. Over %d figures "
            "the median spread was %s and the largest %s%s." %
            (len(measured), fmt_spread(statistics.median_low(measured)), fmt_spread(measured[-1]),
             "; compare only ratios taken in one run" if measured[-1] > 0.1 else ""))
    else:
        lines.append("Noise: not measured (one run per figure).")
    if machine.get("quick") == "1":
        lines += ["", "**A --quick run: smoke-sized workloads, the figures mean nothing.**"]
    return lines


def main_table(binaries, otp, with_otp):
    plotted = []
    lines = [
        "## etsmgr beside Erlang/OTP",
        "",
        "Measured in the same invocation, each OTP group just before the etsmgr binary it pairs "
        "with. Ratio: how many times better etsmgr is (above 1: etsmgr is faster or smaller).",
        "",
        "| figure | etsmgr | spread | OTP | spread | ratio | note |",
        "|---|---|---|---|---|---|---|",
    ]
    spreads = []
    for what, (binary, pattern, counter), (figure, otp_counter), better, unit, note in PAIRS:
        m = cpp_measurement(binaries, binary, pattern, counter)
        mine = m["measured"] if m else None
        mine_spread = spread(m["runs"]) if m else None
        theirs, theirs_spread = None, None
        if (figure, otp_counter) in otp:
            runs = otp[(figure, otp_counter)][1]
            theirs, theirs_spread = statistics.median_low(runs), spread(runs)
            spreads.append(theirs_spread)
        ratio = None
        if mine and theirs:
            ratio = mine / theirs if better == "higher" else theirs / mine
            plotted.append((what, ratio))
        if m is None:
            note = ("%s; " % note if note else "") + "no etsmgr figure (%s did not run)" % binary
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            what, fmt(mine, unit), fmt_spread(mine_spread),
            fmt(theirs, unit) if with_otp else "not run (--with-otp)", fmt_spread(theirs_spread),
            PLACEHOLDER if ratio is None else "%.2fx" % ratio, note))
    return lines, plotted, spreads


def targets_table(binaries):
    lines = [
        "## Every figure against its target",
        "",
        "Ratio above 1: the target is met.",
        "",
        "| binary | figure | measured | spread | target | ratio | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios, spreads = [], []
    for binary, doc in sorted(binaries.items()):
        for f in doc["figures"]:
            s = spread(f["runs"]) if f.get("runs") else None
            spreads.append(s)
            verdict = {True: "MET", False: "MISSED", None: "not judged"}[f["met"]]
            if f["measured"] is None:
                verdict = "NOT RUN"
            elif f["ratio"] is not None:
                ratios.append(("%s [%s]" % (f["what"].split(" [")[0], binary), f["ratio"]))
            lines.append("| %s | %s `%s` | %s | %s | %s %s | %s | %s |" % (
                binary, f["what"], f["benchmark"], fmt(f["measured"], f["unit"]), fmt_spread(s),
                ">=" if f["better"] == "higher" else "<=", fmt(f["target"], f["unit"]),
                PLACEHOLDER if f["ratio"] is None else "%.2fx" % f["ratio"], verdict))
    return lines, ratios, spreads


def etsredis_table(figures):
    if not figures:
        return []
    lines = [
        "## etsredis beside redis-server",
        "",
        "Ratios to redis-server without persistence (throughput: above 1 is better; p99: below 1 "
        "is better).",
        "",
        "| server | -P | test | requests/s | p99 ms | throughput x | p99 x |",
        "|---|---|---|---|---|---|---|",
    ]
    for (server, pipeline, test), f in sorted(figures.items(), key=lambda kv: (-kv[0][1], kv[0])):
        lines.append("| %s | %d | %s | %s | %.3g | %.2fx | %.2fx |" % (
            server, pipeline, test, fmt(statistics.median_low(f["rps"])),
            statistics.median_low(f["p99_ms"]), statistics.median_low(f["rps_ratio"]),
            statistics.median_low(f["p99_ratio"])))
    return lines


def thread_series(binaries):
    """{benchmark without /threads:N: {threads: items_per_second}} where more than one count."""
    series = {}
    for binary, doc in binaries.items():
        for m in doc["measurements"]:
            match = re.match(r"(.*)/threads:(\d+)$", m["benchmark"])
            if match and m["counter"] == "items_per_second":
                series.setdefault(match.group(1), {})[int(match.group(2))] = m["measured"]
    return {name: points for name, points in series.items() if len(points) > 1}


def plots(out, pair_ratios, target_ratios, with_otp, samples, series, otp, quick):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    caveat = " (--quick: meaningless)" if quick else ""
    ratios = pair_ratios if with_otp else target_ratios
    if ratios:
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(ratios) + 1.5))
        names = [name for name, _ in ratios]
        values = [value for _, value in ratios]
        ax.barh(names, values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
        ax.axvline(1, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("etsmgr / Erlang/OTP (above 1: etsmgr better)" if with_otp else
                      "measured / target (above 1: target met)")
        ax.set_title(("etsmgr against Erlang/OTP, same run" if with_otp else
                      "etsmgr against its targets") + caveat)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "ratios.png"), dpi=110)
        plt.close(fig)
        written.append(("ratios.png", ax.get_title()))
    if any(samples.values()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, values in samples.items():
            if values:
                xs = sorted(v / 1e3 for v in values)
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.step(xs, ys, where="post", label="%s (%d kills)" % (label, len(xs)))
        ax.set_xscale("log")
        ax.set_xlabel("kill -> owner restarted with its table (us)")
        ax.set_ylabel("fraction of recoveries")
        ax.set_title("Recovery latency (CDF)" + caveat)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "recovery_cdf.png"), dpi=110)
        plt.close(fig)
        written.append(("recovery_cdf.png", "Recovery latency (CDF)"))
    if series:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, points in sorted(series.items()):
            threads = sorted(points)
            ax.plot(threads, [points[t] / 1e6 for t in threads], marker="o",
                    label="etsmgr " + name.split("/")[0])
        otp_points = {n: otp.get(("update_counter_one_key_%d_procs" % n, "items_per_second"))
                      for n in (1, 2)}
        if all(otp_points.values()):
            ax.plot([1, 2], [statistics.median_low(otp_points[n][1]) / 1e6 for n in (1, 2)],
                    marker="s", linestyle="--", label="OTP ets:update_counter, one key")
        ax.set_xlabel("threads (processes for OTP)")
        ax.set_ylabel("million operations / s, total")
        ax.set_xticks(sorted({t for p in series.values() for t in p}))
        ax.set_title("Throughput against threads" + caveat)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "threads.png"), dpi=110)
        plt.close(fig)
        written.append(("threads.png", "Throughput against threads"))
    return written


COMPARE_TOLERANCE = 0.10


def comparison(now, earlier, earlier_dir):
    """Lines comparing this run's ratios with an earlier run's, and the summary line.

    `now` and `earlier` map each ratio's name to its value: the etsmgr/OTP pairs, every figure's
    ratio to its target, etsredis's throughput ratio to redis-server. A ratio is reproduced when
    it is within COMPARE_TOLERANCE of the earlier one (relative).
    """
    lines = [
        "## Against an earlier run",
        "",
        "Each ratio of this run beside the same ratio in `%s`: reproduced when within %d%% of it."
        % (earlier_dir, round(COMPARE_TOLERANCE * 100)),
        "",
        "| ratio | earlier | now | change | within %d%% |" % round(COMPARE_TOLERANCE * 100),
        "|---|---|---|---|---|",
    ]
    within, compared = 0, 0
    for name in sorted(set(now) | set(earlier)):
        a, b = earlier.get(name), now.get(name)
        if a is None or b is None or a == 0:
            lines.append("| %s | %s | %s | - | not compared |" % (
                name, PLACEHOLDER if a is None else "%.2fx" % a,
                PLACEHOLDER if b is None else "%.2fx" % b))
            continue
        change = (b - a) / abs(a)
        ok = abs(change) <= COMPARE_TOLERANCE
        compared += 1
        within += ok
        lines.append("| %s | %.2fx | %.2fx | %+.1f%% | %s |" % (
            name, a, b, change * 100, "yes" if ok else "**no**"))
    summary = "%d of %d ratios within %d%% of the earlier run" % (
        within, compared, round(COMPARE_TOLERANCE * 100))
    lines[2:2] = ["**%s.**" % summary, ""]
    return lines, summary


def all_ratios(raw):
    """Every ratio a report states, by name (for comparing two runs)."""
    binaries = load_cpp(raw)
    otp, _ = load_otp(raw)
    ratios = {}
    for what, ratio in main_table(binaries, otp, True)[1]:
        ratios["etsmgr/OTP: " + what] = ratio
    for what, ratio in targets_table(binaries)[1]:
        ratios["to target: " + what] = ratio
    for (server, pipeline, test), f in load_etsredis(raw).items():
        ratios["to redis-server: %s -P %d %s" % (server, pipeline, test)] = (
            statistics.median_low(f["rps_ratio"]))
    return ratios


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    options = [a for a in argv[1:] if a.startswith("--")]
    compare = [a[len("--compare="):] for a in options if a.startswith("--compare=")]
    if len(args) != 1 or len(compare) > 1 or any(
            a != "--no-plots" and not a.startswith("--compare=") for a in options):
        print("usage: bench_report.py DIR [--no-plots] [--compare=EARLIER_DIR]", file=sys.stderr)
        return 2
    out = args[0]
    if compare and not os.path.isdir(os.path.join(compare[0], "raw")):
        print("bench_report.py: --compare=%s has no raw/ directory (an earlier tools/bench.sh "
              "--out)" % compare[0], file=sys.stderr)
        return 2
    raw = os.path.join(out, "raw")
    machine = read_key_values(os.path.join(raw, "machine.txt"))
    binaries = load_cpp(raw)
    otp, otp_info = load_otp(raw)
    with_otp = machine.get("with_otp") == "1" or bool(otp)
    redis = load_etsredis(raw)

    pair_lines, pair_ratios, otp_spreads = main_table(binaries, otp, with_otp)
    target_lines, target_ratios, cpp_spreads = targets_table(binaries)
    samples = {"etsmgr (manager)": load_samples(raw, "recovery_after_owner_kill_ns"),
               "Erlang/OTP (plain heir)": load_samples(raw, "otp_recovery_ns")}
    series = thread_series(binaries)
    written = []
    if "--no-plots" not in argv:
        written = plots(out, pair_ratios, target_ratios, with_otp, samples, series, otp,
                        machine.get("quick") == "1")

    lines = ["# etsmgr benchmark report", "",
             "Written by `tools/bench.sh`; raw logs, JSON and latency samples are in `raw/`.", ""]
    lines += machine_section(machine, otp_info, otp_spreads + cpp_spreads) + [""]
    lines += pair_lines + [""]
    for name, title in written:
        lines += ["![%s](%s)" % (title, name), ""]
    lines += target_lines + [""]
    lines += etsredis_table(redis) + [""]
    compare_summary = None
    if compare:
        compare_lines, compare_summary = comparison(
            all_ratios(raw), all_ratios(os.path.join(compare[0], "raw")), compare[0])
        lines += compare_lines + [""]
    expected = ("executor_benchmark", "process_benchmark", "table_benchmark", "manager_benchmark")
    missing = [b for b in expected if b not in binaries]
    if missing:
        lines += ["Not run (or failed before writing figures): %s." % ", ".join(missing), ""]
    report = os.path.join(out, "README.md")
    with open(report, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    print("bench: report written to %s" % report)
    for name, _ in written:
        print("bench: plot %s" % os.path.join(out, name))
    print("\n".join(pair_lines[4:]))
    if compare_summary:
        print("bench: %s (%s)" % (compare_summary, compare[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

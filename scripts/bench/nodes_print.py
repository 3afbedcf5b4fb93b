"""The tables ``nodes.py`` prints: throughput by number of nodes, and the kill run."""

from __future__ import annotations

from typing import Any

__all__ = ["print_results"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def print_results(result: dict[str, Any]) -> None:
    rows = []
    for t in result["throughput"]:
        ms = t["cpu_ms_per_job"]
        rows.append(
            [
                str(t["nodes"]),
                t.get("mode", "one at a time"),
                f"{t['jobs']:,}",
                f"{t['jobs_per_s']:,.0f}",
                f"{t['submits_per_s']:,.0f}",
                f"{t['p50_ms']:,.0f}",
                f"{t['p99_ms']:,.0f}",
                " ".join(f"{n}:{c}" for n, c in t["per_node"].items()),
                f"{ms['nodes']:.2f} / {ms['postgres']:.2f} / {ms['bench']:.2f}",
                str(len(t["lost"])),
                str(len(t["ran_twice"])),
                f"{t.get('file_create_us', 0):,.0f}",
            ]
        )
    header = ["nodes", "submitted", "jobs", "jobs/s", "submits/s", "p50 ms", "p99 ms"]
    header += ["ran per node", "CPU ms/job nodes/pg/bench", "lost", "twice", "new file us"]
    print(_table(header, rows))
    for t in result["throughput"]:
        for name, threads in t["node_thread_cpu_s"].items():
            busiest = ", ".join(f"{tid} {s:.2f}" for tid, s in list(threads.items())[:6])
            print(f"  {t['nodes']} node(s), {name}, CPU s of its busiest threads: {busiest}")
        if t["lost"] or t["ran_twice"]:
            print(f"  LOSS OR DOUBLE RUN: lost {t['lost'][:20]}, ran twice {t['ran_twice'][:20]}")
    kill = result.get("kill")
    if kill:
        print()
        header = ["nodes", "jobs", "job ms", "in flight at kill", "running on killed"]
        header += ["finished", "lost", "ran twice", "all done s after kill"]
        print(
            _table(
                header,
                [
                    [
                        str(kill["nodes"]),
                        f"{kill['jobs']:,}",
                        f"{kill['job_ms']:g}",
                        str(kill["in_flight_at_kill"]),
                        str(kill["running_on_killed_node"]),
                        f"{kill['finished']:,}",
                        str(len(kill["lost"])),
                        str(len(kill["ran_twice"])),
                        f"{kill['all_done_s_after_kill']:.2f}",
                    ]
                ],
            )
        )
        if kill["lost"]:
            print(f"  LOST: {kill['lost'][:20]}")

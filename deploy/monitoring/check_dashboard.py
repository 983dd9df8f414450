#!/usr/bin/env python3
"""Lists every Parley metric the Grafana dashboard and the alert rules use, and
checks them against real `/metrics` scrapes.

    deploy/monitoring/check_dashboard.py                      # list the names, check the files parse
    deploy/monitoring/check_dashboard.py --scrape a.txt b.txt # also: fail when a name is in no scrape
    deploy/monitoring/check_dashboard.py --write-prometheusrule  # alerts.yml -> prometheusrule.yaml

Several scrapes (one per service: command API, read API, relay, projector) are
taken as one union. A histogram's `_bucket`, `_sum` and `_count` series count
as its base name. Only `parley_*` names are checked; Prometheus' own (`up`) are
always there. Exit 0 when everything is found, 1 otherwise.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
NAME = re.compile(r"\bparley_[a-zA-Z0-9_:]*[a-zA-Z0-9]")
SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard_exprs(path):
    """(where, expr) for every query of every panel, rows' panels included."""
    dash = json.loads(Path(path).read_text())
    found = []

    def walk(panels):
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                if not expr.strip():
                    raise SystemExit(f"{path}: panel {panel.get('title')!r} has a query without expr")
                found.append((f"panel {panel.get('title')!r}", expr))

    walk(dash.get("panels", []))
    if not found:
        raise SystemExit(f"{path}: no panel queries anything")
    return found


def alert_exprs(path):
    rules = yaml.safe_load(Path(path).read_text())
    found = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            found.append((f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return found


def base(name):
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def used_names(exprs):
    """name -> sorted places that use it."""
    used = {}
    for where, expr in exprs:
        for name in NAME.findall(expr):
            used.setdefault(name, set()).add(where)
    return {name: sorted(places) for name, places in sorted(used.items())}


def scraped_names(paths):
    """Sample names and histogram/summary families of Prometheus text scrapes."""
    samples, families = set(), set()
    for path in paths:
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE" and parts[3] in ("histogram", "summary"):
                    families.add(parts[2])
                continue
            match = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            if match:
                samples.add(match.group(0))
    if not samples:
        raise SystemExit(f"no samples in {', '.join(map(str, paths))}: is that a /metrics scrape?")
    return samples, families


def present(name, samples, families):
    if name in samples:
        return True
    stem = base(name)
    if stem != name:
        # A _bucket/_sum/_count of a histogram that is there.
        return stem in families or any(stem + s in samples for s in SUFFIXES)
    # A histogram's base name, used as such (none of ours are, but allow it).
    return name in families or any(name + s in samples for s in SUFFIXES)


PROMETHEUSRULE_HEADER = """\
# Generated from alerts.yml by `deploy/monitoring/check_dashboard.py
# --write-prometheusrule`; edit alerts.yml, then regenerate (a test compares them).
"""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL) as `|` blocks, as in alerts.yml."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def prometheus_rule(alerts_path):
    """alerts.yml as a Prometheus Operator PrometheusRule."""
    groups = yaml.safe_load(Path(alerts_path).read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "parley", "labels": {"release": "prometheus"}},
        "spec": {"groups": groups},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dashboard", default=HERE / "dashboard.json")
    parser.add_argument("--alerts", default=HERE / "alerts.yml")
    parser.add_argument("--write-prometheusrule", action="store_true",
                        help="write prometheusrule.yaml from the alert rules, then exit")
    parser.add_argument("--scrape", nargs="+", metavar="FILE", help="text of GET /metrics, one file per service")
    args = parser.parse_args(argv)

    if args.write_prometheusrule:
        out = HERE / "prometheusrule.yaml"
        body = yaml.dump(prometheus_rule(args.alerts), Dumper=_BlockDumper, sort_keys=False, width=1000)
        out.write_text(PROMETHEUSRULE_HEADER + body)
        print(f"wrote {out}")
        return 0

    exprs = dashboard_exprs(args.dashboard) + alert_exprs(args.alerts)
    used = used_names(exprs)
    families = sorted({base(n) for n in used})
    print(f"{len(exprs)} queries in {Path(args.dashboard).name} and {Path(args.alerts).name} "
          f"use {len(used)} parley_* names ({len(families)} metrics):")

    if not args.scrape:
        for name, places in used.items():
            print(f"  {name:<52} {len(places)} use(s)")
        return 0

    samples, hist = scraped_names(args.scrape)
    missing = []
    for name, places in used.items():
        ok = present(name, samples, hist)
        print(f"  {'ok     ' if ok else 'MISSING'} {name}")
        if not ok:
            missing.append((name, places))
    if missing:
        print(f"\n{len(missing)} name(s) used but in no scrape ({', '.join(map(str, args.scrape))}):", file=sys.stderr)
        for name, places in missing:
            print(f"  {name}: {'; '.join(places)}", file=sys.stderr)
        return 1
    print(f"every name is in the scrape(s) ({len(samples)} sample names seen)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

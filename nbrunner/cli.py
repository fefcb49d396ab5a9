"""The `nbrunner` command: one verb per operation, `--json` on every listing.

Errors are one line on stderr: exit status 2 for bad input, 1 for an operation that failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .backends import BACKENDS
from .errors import BadInput, NbrunnerError
from .logs import LogFollower, tail_offset
from .models import RunRecord
from .runner import Runner
from .states import RunStatus

Handler = Callable[[argparse.Namespace, Runner], int]
_HANDLERS: dict[str, Handler] = {}


def verb(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _HANDLERS[name] = handler
        return handler

    return register


# -- output ----------------------------------------------------------------------------------
def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _short_time(iso_time: str | None) -> str:
    return iso_time[5:19].replace("T", " ") if iso_time else "-"


def _print_table(records: Sequence[RunRecord]) -> None:
    if not records:
        print("no runs")
        return
    rows = [("ID", "MODULE", "STATUS", "EXIT", "DURATION", "SUBMITTED", "PARAMS")]
    for r in records:
        data = r.to_dict()
        duration = f"{r.duration_s:.1f}s" if r.duration_s is not None else "-"
        params = " ".join(f"{k}={v}" for k, v in r.params.items())
        exit_code = "-" if r.exit_code is None else str(r.exit_code)
        rows.append(
            (
                str(r.id),
                r.module,
                r.status.value,
                exit_code,
                duration,
                _short_time(data["submitted_at"]),
                params[:60],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )


def _print_records(records: Sequence[RunRecord], as_json: bool) -> None:
    if as_json:
        _print_json([r.to_dict() for r in records])
    else:
        _print_table(records)


# -- verbs -----------------------------------------------------------------------------------
@verb("modules")
def _modules(args: argparse.Namespace, runner: Runner) -> int:
    modules = runner.modules()
    if args.json:
        _print_json([m.to_dict() for m in modules.values()])
        return 0
    for name, spec in sorted(modules.items()):
        params = ", ".join(
            f"{p.name}:{p.type}" + (f"={p.default}" if p.default is not None else "")
            for p in spec.params
        )
        print(f"{name:<16} {spec.description}")
        if params:
            print(f"{'':<16} params: {params}")
    if not modules:
        print(f"no modules; add some to {runner.modules_file}")
    return 0


def _parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"parameters are given as -p KEY=VALUE, got {pair!r}")
        params[key.strip()] = value
    return params


@verb("run")
def _run(args: argparse.Namespace, runner: Runner) -> int:
    run = runner.submit(
        args.module,
        _parse_params(args.param),
        priority=args.priority,
        timeout=args.timeout,
        group=args.group,
        after=args.after,
        backend=args.backend,
    )
    print(run.id, flush=True)
    if not args.wait:
        return 0
    record = runner.wait(run.id)
    print(
        f"run {record.id} {record.status.value}" + (f": {record.reason}" if record.reason else ""),
        file=sys.stderr,
    )
    return 0 if record.status is RunStatus.SUCCEEDED else 1


@verb("ps")
def _ps(args: argparse.Namespace, runner: Runner) -> int:
    _print_records(runner.store.active(), args.json)
    return 0


@verb("history")
def _history(args: argparse.Namespace, runner: Runner) -> int:
    from .store import HistoryFilter

    query = HistoryFilter.build(args.status, args.module, args.since, args.until, args.text)
    _print_records(runner.store.history(query, limit=args.limit, offset=args.offset), args.json)
    return 0


@verb("show")
def _show(args: argparse.Namespace, runner: Runner) -> int:
    record = runner.get(args.id).record
    if args.json:
        _print_json(record.to_dict())
    else:
        for key, value in record.to_dict().items():
            if value not in (None, [], {}):
                print(f"{key:<15} {value}")
    return 0


@verb("logs")
def _logs(args: argparse.Namespace, runner: Runner) -> int:
    record = runner.get(args.id).record
    start = 0 if args.tail is None else tail_offset(record.log_path, args.tail)
    follower = LogFollower(record.log_path, offset=start)
    out = sys.stdout.buffer
    while True:
        # Asked before draining: whatever the run wrote before it ended is then read below.
        ended = args.follow and runner.store.get(record.id).is_done
        while chunk := follower.read_bytes():
            out.write(chunk)
        out.flush()
        if not args.follow or ended:
            return 0
        time.sleep(0.2)


@verb("cancel")
def _cancel(args: argparse.Namespace, runner: Runner) -> int:
    """Cancel each id given; says which were cancelled and why the others were not."""
    ids = [r.id for r in runner.store.active()] if args.all else args.ids
    if not ids:
        raise BadInput("name the runs to cancel (nbrunner cancel ID [ID ...]) or use --all")
    done, refused = [], []
    for run_id in ids:
        try:
            record = runner.cancel(run_id)
        except BadInput as exc:
            refused.append({"id": run_id, "error": str(exc)})
            print(f"nbrunner: error: {exc}", file=sys.stderr)
            continue
        done.append(record.to_dict())
        if not args.json:
            what = "cancelled" if record.is_done else "cancelling (its processes are stopping)"
            print(f"run {record.id} {what}")
    if args.json:
        _print_json({"cancelled": done, "refused": refused})
    return 2 if refused else 0


@verb("restart")
def _restart(args: argparse.Namespace, runner: Runner) -> int:
    print(runner.restart(args.id).id)
    return 0


def _report_request(record: RunRecord, what: str, as_json: bool) -> int:
    if as_json:
        _print_json(record.to_dict())
    else:
        print(f"run {record.id} {what}")
    return 0


@verb("pause")
def _pause(args: argparse.Namespace, runner: Runner) -> int:
    return _report_request(runner.pause(args.id), "pausing (its tree is suspended)", args.json)


@verb("resume")
def _resume(args: argparse.Namespace, runner: Runner) -> int:
    return _report_request(runner.resume(args.id), "resuming", args.json)


@verb("front")
def _front(args: argparse.Namespace, runner: Runner) -> int:
    record = runner.move_to_front(args.id)
    return _report_request(record, f"is next in the queue (priority {record.priority})", args.json)


def prometheus_text(metrics: dict[str, Any]) -> str:
    """The counters in Prometheus' text exposition format."""
    lines = ["# TYPE nbrunner_runs gauge"]
    lines += [
        f'nbrunner_runs{{status="{status}"}} {count}'
        for status, count in metrics["runs_by_status"].items()
    ]
    lines += [
        "# TYPE nbrunner_queued gauge",
        f"nbrunner_queued {metrics['queued']}",
        "# TYPE nbrunner_running gauge",
        f"nbrunner_running {metrics['running']}",
    ]
    for name, key in (("wait", "mean_wait_s"), ("run", "mean_run_s")):
        lines.append(f"# TYPE nbrunner_{name}_seconds_mean gauge")
        lines += [
            f'nbrunner_{name}_seconds_mean{{module="{module}"}} {stats[key]:.6g}'
            for module, stats in metrics["modules"].items()
            if stats[key] is not None
        ]
    return "\n".join(lines) + "\n"


@verb("metrics")
def _metrics(args: argparse.Namespace, runner: Runner) -> int:
    metrics = runner.metrics()
    if args.json:
        _print_json(metrics)
    elif args.prometheus:
        sys.stdout.write(prometheus_text(metrics))
    else:
        print(
            f"queued {metrics['queued']}, running {metrics['running']}, "
            f"{metrics['total']} runs in all"
        )
        for status, count in metrics["runs_by_status"].items():
            if count:
                print(f"  {status:<10} {count}")
        for module, stats in metrics["modules"].items():
            wait, run_time = stats["mean_wait_s"], stats["mean_run_s"]
            print(
                f"  {module:<16} {stats['runs']} runs"
                + (f", mean wait {wait:.2f} s" if wait is not None else "")
                + (f", mean run {run_time:.2f} s" if run_time is not None else "")
            )
    return 0


@verb("wait")
def _wait(args: argparse.Namespace, runner: Runner) -> int:
    try:
        record = runner.wait(args.id, timeout=args.timeout)
    except TimeoutError as exc:
        print(f"nbrunner: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(record.to_dict())
    else:
        print(
            f"run {record.id} {record.status.value}"
            + (f" (exit code {record.exit_code})" if record.exit_code is not None else "")
            + (f": {record.reason}" if record.reason else "")
        )
    return 0 if record.status is RunStatus.SUCCEEDED else 1


@verb("worker")
def _worker(args: argparse.Namespace, runner: Runner) -> int:
    def report(changes: list[RunRecord]) -> None:
        for r in changes:
            print(f"{time.strftime('%H:%M:%S')} run {r.id} {r.module} {r.status.value}", flush=True)

    runner.subscribe(report)
    runner.start()
    print(f"nbrunner worker on {runner.home}; Ctrl-C to stop (runs keep going)", flush=True)
    try:
        while runner.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        runner.close()
    return 0


@verb("dashboard")
def _dashboard(args: argparse.Namespace, runner: Runner) -> int:
    from .ui.serve import serve

    return serve(
        runner.home,
        port=args.port,
        ip=args.ip,
        open_browser=not args.no_browser,
        modules_file=args.modules,
    )


@verb("config")
def _config(args: argparse.Namespace, runner: Runner) -> int:
    if args.key is None:
        values = runner.config()
        if args.json:
            _print_json(values)
        else:
            for key, value in sorted(values.items()):
                print(f"{key} = {json.dumps(value)}")
        return 0
    value = runner.config(args.key, args.value)
    print(json.dumps({args.key: value}) if args.json else json.dumps(value))
    return 0


# -- argument parsing ------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        default=argparse.SUPPRESS,
        help="nbrunner home (default: $NBRUNNER_HOME or ~/.nbrunner)",
    )
    common.add_argument(
        "--modules",
        default=argparse.SUPPRESS,
        help="modules file (default: $NBRUNNER_MODULES or HOME/modules.toml)",
    )
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    parser = argparse.ArgumentParser(
        prog="nbrunner",
        parents=[common],
        description="Run many jobs at once, from Jupyter or here.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def add(
        name: str, help_text: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help_text, parents=[common, *parents])

    add("modules", "list the modules you can run", listing)
    run = add("run", "queue a run of a module; prints its id", listing)
    run.add_argument("module")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--priority", type=int, default=0, help="higher starts first")
    run.add_argument("--timeout", type=float, help="seconds before the run is stopped")
    run.add_argument("--group", help="queue group (its own limit: config group.NAME N)")
    run.add_argument(
        "--after",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="start only after this run has succeeded",
    )
    run.add_argument("--wait", action="store_true", help="wait for it to end")
    run.add_argument(
        "--backend",
        choices=BACKENDS,
        help="where it runs (default: config backend); ray uses config ray.address",
    )
    add("ps", "list active runs (queued, starting, running, paused)", listing)
    history = add("history", "list past and present runs, newest first", listing)
    history.add_argument("--status")
    history.add_argument("--module")
    history.add_argument("--since", help="submitted at or after (ISO date/time)")
    history.add_argument("--until", help="submitted before (ISO date/time)")
    history.add_argument("--text", help="text found in params, module or reason")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--offset", type=int, default=0)
    for name, help_text in (
        ("show", "show one run's record"),
        ("restart", "run again with the same module and params"),
        ("pause", "suspend a running run's whole process tree (it keeps its slot)"),
        ("resume", "continue a paused run"),
        ("front", "move a queued run to the front of the queue"),
    ):
        add(name, help_text, listing).add_argument("id")
    cancel = add("cancel", "cancel runs: queued ones leave the queue, started ones stop", listing)
    cancel.add_argument("ids", nargs="*", metavar="ID")
    cancel.add_argument("--all", action="store_true", help="every queued and running run")
    metrics = add("metrics", "counters: runs by status, mean wait and run time", listing)
    metrics.add_argument("--prometheus", action="store_true", help="Prometheus text format")
    logs = add("logs", "print a run's log")
    logs.add_argument("id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as it grows")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    wait = add("wait", "wait for a run to end; exit status 0 if it succeeded", listing)
    wait.add_argument("id")
    wait.add_argument("--timeout", type=float)
    add("worker", "keep the queue moving with no notebook open")
    dashboard = add("dashboard", "serve the dashboard as a web app (Voila)")
    dashboard.add_argument("--port", type=int, default=8866)
    dashboard.add_argument("--ip", default="127.0.0.1")
    dashboard.add_argument("--no-browser", action="store_true")
    config = add("config", "show or set settings (max_concurrent, paused, group.NAME...)", listing)
    config.add_argument("key", nargs="?")
    config.add_argument("value", nargs="?")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    home = getattr(args, "home", None)
    args.modules = getattr(args, "modules", None)
    try:
        runner = Runner(home, args.modules, start=False)
        code = _HANDLERS[args.verb](args, runner)
    except BadInput as exc:
        print(f"nbrunner: error: {exc}", file=sys.stderr)
        return 2
    except NbrunnerError as exc:
        print(f"nbrunner: failed: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

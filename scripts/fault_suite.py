"""Inject every fault the harness must survive and print what happened.

    python scripts/fault_suite.py              # all cases (about 4-5 minutes on 2 cores)
    python scripts/fault_suite.py --quick      # only the cases `make test` also runs
    python scripts/fault_suite.py --only SIGINT --keep /tmp/faults

Each case runs real `python -m sm3repro.train` processes (signals, two concurrent sweeps,
read-only and full mounts, malformed files, a W&B server that is refused or never answers)
against a small reference sweep; see scripts/faultcases.py. The table lists fault, expected
behaviour, observed behaviour and pass/fail; the last line counts faults tried, faults handled
and finished records lost (present before a fault, missing or changed after it). Needs the
EWT files ($SM3REPRO_DATA, else data/ud-english-ewt: `make data`) and, for the
storage cases, root (tmpfs mounts; without it they fall back to chattr / RLIMIT_FSIZE).
Exit status 0 when every fault was handled; a case that gives no outcome counts as failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

from faultcases import SUITE  # noqa: E402
from faultlib import Bench, Lab, Outcome, case_outcomes  # noqa: E402
from tabulate import tabulate  # noqa: E402

from sm3repro.data.download import EWT_FILES  # noqa: E402
from sm3repro.paths import ewt_data_dir  # noqa: E402


def _ewt_folder(arg: str | None) -> Path:
    folder = Path(arg) if arg else ewt_data_dir(REPO_ROOT)
    missing = [name for name in EWT_FILES.values() if not (folder / name).is_file()]
    if missing:
        sys.exit(
            f"fault_suite: the EWT files are not in {folder} (missing {', '.join(missing)}); "
            "run `make data`"
        )
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the cases make test runs")
    parser.add_argument("--only", help="only cases whose group or name contains this")
    parser.add_argument(
        "--data", help="the EWT folder (default: $SM3REPRO_DATA, else data/ud-english-ewt)"
    )
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temp one)")
    args = parser.parse_args(argv)

    cases = [c for c in SUITE if c.in_make_test or not args.quick]
    if args.only:
        cases = [c for c in cases if args.only.lower() in f"{c.group} {c.name}".lower()]
        if not cases:  # an empty run would report "0 tried, 0 handled" and exit 0
            sys.exit(
                f"fault_suite: no case matches --only {args.only!r}"
                + (" among the --quick ones" if args.quick else "")
                + "; the cases are: "
                + ", ".join(f"{c.group}: {c.name}" for c in SUITE)
            )
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sm3repro-faults-"))
    started = time.monotonic()
    print(f"building the reference sweep in {workdir} ...", file=sys.stderr, flush=True)
    bench = Bench.build(workdir / "bench", _ewt_folder(args.data))

    outcomes: list[Outcome] = []
    for number, case in enumerate(cases, start=1):
        lab = Lab(bench, workdir / f"case{number:02d}")
        t0 = time.monotonic()
        results = case_outcomes(f"{case.group}: {case.name}", case.run(lab))
        for out in results:
            verdict = "pass" if out.handled else "FAIL"
            print(
                f"[{time.monotonic() - t0:5.1f} s] {verdict} {out.fault}",
                file=sys.stderr,
                flush=True,
            )
            if not out.handled:
                print(out.explain(), file=sys.stderr)
        outcomes += results

    rows = [(o.fault, o.expected, o.observed, "pass" if o.handled else "FAIL") for o in outcomes]
    print(tabulate(rows, headers=["fault", "expected", "observed", "result"], tablefmt="github"))
    handled = sum(o.handled for o in outcomes)
    lost = sum(o.lost for o in outcomes)
    print(f"({time.monotonic() - started:.0f} s; work folder {workdir})", file=sys.stderr)
    print(f"faults: {len(outcomes)} tried, {handled} handled, {lost} records lost")
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if handled == len(outcomes) and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

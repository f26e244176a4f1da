"""Benchmark of the CSV import path: throughput and peak memory against a file's size.

What it measures
    For each requested size N (default 100k and 1M rows) it generates, deterministically from
    ``--seed``, two CSV files and imports them one after the other into a fresh SQLite hub
    (a temp dir) that has three custom fields defined beforehand with
    :func:`daemon.hub.contacts.add_custom_field` ("Class Year" number, "Application Date" date,
    "Application Status" text):

    * ``initial``: N rows of new contacts, as a first load. ~2% have a bad phone (skipped:
      a new contact needs one), ~2% a bad email (created, email rejected); optional fields are
      sometimes blank, a few custom values are ``UNSET``, a few rows have no CRM id.
    * ``mixed``: N rows where ~10% carry a CRM id of the initial file with a changed email,
      last name, phone or custom value (some are identical apart from formatting and end up
      unchanged, some clear a custom field with ``UNSET``), ~0.5% repeat a CRM id seen earlier
      in the same file (``duplicate-unique-id-crmId``), ~2% bad phones, ~2% bad emails, and
      the rest new contacts. Updates need a second import because within one file the first
      record with a CRM id wins.

    Every import runs in a fresh child process (this script's hidden ``_child`` sub-command),
    so its peak RSS (``VmHWM`` from ``/proc/self/status``) belongs to that one import. The
    child times :func:`daemon.hub.csv_import.import_csv` alone (not interpreter start-up, not hub
    set-up) and reports the import summary: created / updated / unchanged / skipped / ignored
    and errors (every sync-log row written).

    The table gives, per file: rows, wall seconds, rows/s, peak RSS, RSS before the import
    started (interpreter + libraries), and the summary counts. Then the ratio of peak RSS
    between the largest and the smallest size: the import streams the file in committed
    batches, so the ratio should stay close to 1.0 whatever the file's size.

Logging
    The importer writes one structlog JSON line to stderr per sync error (thousands here). The
    child calls ``daemon.foundation.log.configure(level="error")``, so those ``warning`` lines are
    not printed and the bench output stays readable; the sync-log rows are still written to the
    hub, and the lines are still built, so their cost stays in the figures.

How to run
    make bench                              # .venv/bin/python bench/import_csv.py
    .venv/bin/python bench/import_csv.py --rows 100k          # one size only
    .venv/bin/python bench/import_csv.py --rows 100000,1000000 --out /tmp/csv --json
    .venv/bin/python bench/import_csv.py --rows 100k --profile /tmp/prof   # cProfile each run

Options: ``--rows`` sizes (comma-separated; ``k``/``M`` suffixes allowed), ``--out DIR`` keeps
the generated files there (default: a temp dir, deleted afterwards), ``--seed``,
``--batch-size`` (passed to ``import_csv``), ``--json`` (results as JSON on stdout instead of
the table), ``--profile DIR`` (run each import under cProfile, save ``DIR/<file>.prof`` and
print its top functions by cumulative time; profiled figures are slower than real ones).
Progress goes to stderr. The 1M-row size takes several minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.hub.csv_import import ImportResult

CHILD_COMMAND = "_child"
DEFAULT_ROWS = "100000,1000000"
DEFAULT_SEED = 20_240_501
PROFILE_TOP = 25

# Custom fields defined before the imports: display name -> type.
CUSTOM_FIELDS: dict[str, str] = {
    "Class Year": "number",
    "Application Date": "date",
    "Application Status": "text",
}
HEADER = [
    "crm_id",
    "first_name",
    "last_name",
    "phone",
    "email",
    *(f"CUSTOM_{name}" for name in CUSTOM_FIELDS),
]
SUMMARY_KEYS = ("created", "updated", "unchanged", "skipped", "ignored", "errors")

# The mix. Fractions of all rows of a file unless said otherwise.
BAD_PHONE = 0.02
BAD_EMAIL = 0.02
NO_CRM_ID = 0.02
UPDATE = 0.10  # mixed file only: rows carrying a CRM id of the initial file
DUPLICATE_IN_FILE = 0.005  # mixed file only: a CRM id repeated within the file
BLANK_EMAIL = 0.08
BLANK_CUSTOM = 0.15  # per custom field
UNSET_CUSTOM = 0.01  # per custom field
# How update rows change their contact (fractions of update rows).
UPDATE_KINDS: dict[str, float] = {
    "email": 0.35,
    "last_name": 0.20,
    "custom": 0.20,
    "identical": 0.10,  # same values, other formatting: unchanged
    "phone": 0.10,
    "unset_custom": 0.05,
}

AREA_CODES = (202, 212, 312, 415, 617, 713)
EXCHANGES = range(200, 1000)
SUBSCRIBERS = 10_000
PHONE_SPACE = len(AREA_CODES) * len(EXCHANGES) * SUBSCRIBERS
PHONE_FORMATS = (
    "({a}) {e}-{s}",
    "{a}-{e}-{s}",
    "+1 {a} {e} {s}",
    "{a}{e}{s}",
    "{a}.{e}.{s}",
    "1-{a}-{e}-{s}",
)
BAD_PHONES = ("555-{s}", "({a}) 1{e2}-{s}", "{a}-{e}-{s}9", "n/a", "{a}-{e}-{s3}", "TBD")
BAD_EMAILS = ("{u}@{d0}", "{u}.{d}", "{u}@@{d}", "{u} {u}@{d}", "{u}@{d}.")
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "students.example.edu")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "Ada Alan Amara Ana Ben Camila Carlos Chen Chloe Daniel Diego Elena Emily Ethan Fatima "
    "Grace Hana Hassan Isabella Ivan Jack James Jin Julia Kai Katherine Layla Liam Lucas Maria "
    "Mateo Maya Mia Mohammed Noah Nora Olivia Omar Priya Rahul Ruth Sam Sofia Tariq Uma Wei "
    "Yara Yusuf Zoe"
)
LAST_NAMES = _words(
    "Adams Ahmed Alvarez Baker Brown Chen Clark Davis Diaz Evans Garcia Gonzalez Green Hall "
    "Harris Hernandez Hill Hopper Jackson Johnson Jones Kim King Lee Lewis Lopez Lovelace "
    "Martin Martinez Miller Moore Nguyen Patel Perez Robinson Rodriguez Sanchez Scott Singh "
    "Smith Taylor Thomas Thompson Turing Walker White Williams Wilson Wright Young"
)
STATUSES = ("Applied", "Admitted", "Deposited", "Enrolled", "Waitlisted", "Withdrawn")


# ---------------------------------------------------------------------------------------------
# Generating the files


@dataclass(slots=True)
class Person:
    """What the generator remembers of a created contact, to write an update row for it."""

    crm_id: str
    first_name: str
    last_name: str
    phone_index: int
    email: str
    custom: list[str]


class Generator:
    """Deterministic rows; phones are unique across every file of one generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        # An affine permutation of the phone space: unique numbers that do not look sequential.
        multiplier = self.rng.randrange(PHONE_SPACE // 3, PHONE_SPACE)
        while math.gcd(multiplier, PHONE_SPACE) != 1:
            multiplier += 1
        self._multiplier = multiplier
        self._offset = self.rng.randrange(PHONE_SPACE)
        self._next_phone = 0
        self._next_crm = 0

    # -- values

    def new_phone_index(self) -> int:
        index = self._next_phone
        self._next_phone += 1
        return index

    def new_crm_id(self) -> str:
        self._next_crm += 1
        return f"S{self._next_crm:08d}"

    def phone(self, index: int) -> str:
        """Phone number ``index`` (always the same number), in a random formatting."""
        n = (index * self._multiplier + self._offset) % PHONE_SPACE
        n, subscriber = divmod(n, SUBSCRIBERS)
        area, exchange = divmod(n, len(EXCHANGES))
        return self.rng.choice(PHONE_FORMATS).format(
            a=AREA_CODES[area], e=EXCHANGES[exchange], s=f"{subscriber:04d}"
        )

    def bad_phone(self) -> str:
        rng = self.rng
        return rng.choice(BAD_PHONES).format(
            a=rng.choice(AREA_CODES),
            e=rng.choice(EXCHANGES),
            e2=f"{rng.randrange(100):02d}",
            s=f"{rng.randrange(SUBSCRIBERS):04d}",
            s3=f"{rng.randrange(1000):03d}",
        )

    def email(self, first: str, last: str) -> str:
        rng = self.rng
        local = f"{first}.{last}{rng.randrange(1, 10_000)}"
        address = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
        return address if rng.random() < 0.9 else address.upper()  # canonical form is lower

    def bad_email(self, first: str, last: str) -> str:
        domain = self.rng.choice(EMAIL_DOMAINS)
        return self.rng.choice(BAD_EMAILS).format(
            u=f"{first}.{last}".lower(), d=domain, d0=domain.split(".")[0]
        )

    def custom_values(self) -> list[str]:
        rng = self.rng
        year = rng.randrange(2025, 2031)
        applied = f"{year - 1}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        if rng.random() < 0.3:  # US formatting, same canonical date
            y, m, d = applied.split("-")
            applied = f"{m}/{d}/{y}"
        values = [str(year), applied, rng.choice(STATUSES)]
        for i in range(len(values)):
            r = rng.random()
            if r < BLANK_CUSTOM:
                values[i] = ""
            elif r < BLANK_CUSTOM + UNSET_CUSTOM:
                values[i] = "UNSET"
        return values

    # -- rows

    def new_row(self, crm_id: str = "") -> tuple[list[str], Person | None]:
        """A row for a new contact; the person when the row creates an updatable contact."""
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        crm = crm_id or ("" if rng.random() < NO_CRM_ID else self.new_crm_id())
        custom = self.custom_values()
        r = rng.random()
        if r < BAD_PHONE:
            return [crm, first, last, self.bad_phone(), self.email(first, last), *custom], None
        phone_index = self.new_phone_index()
        phone = self.phone(phone_index)
        if r < BAD_PHONE + BAD_EMAIL:
            email = self.bad_email(first, last)
        elif rng.random() < BLANK_EMAIL:
            email = ""
        else:
            email = self.email(first, last)
        row = [crm, first, last, phone, email, *custom]
        person = Person(crm, first, last, phone_index, email, custom) if crm else None
        return row, person

    def update_row(self, person: Person) -> list[str]:
        """A row for an existing contact, changing one thing (or nothing) about it."""
        rng = self.rng
        kinds, weights = zip(*UPDATE_KINDS.items(), strict=True)
        kind = rng.choices(kinds, weights)[0]
        last, email = person.last_name, person.email
        custom = list(person.custom)
        phone = self.phone(person.phone_index)  # may be formatted differently: same number
        if kind == "email":
            email = self.email(person.first_name, last)
        elif kind == "last_name":
            last = rng.choice(LAST_NAMES)
        elif kind == "custom":
            custom = [str(rng.randrange(2025, 2031)), custom[1], rng.choice(STATUSES)]
        elif kind == "phone":
            phone = self.phone(self.new_phone_index())
        elif kind == "unset_custom":
            custom[2] = "UNSET"
        elif kind == "identical" and email:
            email = email.swapcase()
        return [person.crm_id, person.first_name, last, phone, email, *custom]


def write_csv(path: Path, rows: Iterator[list[str]]) -> int:
    """Write the header and ``rows``; return the number of rows."""
    count = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def initial_rows(gen: Generator, n: int, targets: list[Person]) -> Iterator[list[str]]:
    """N new contacts; keeps about ``UPDATE`` x N of them in ``targets`` for the mixed file."""
    keep = UPDATE / (1 - BAD_PHONE - NO_CRM_ID) * 1.02
    for _ in range(n):
        row, person = gen.new_row()
        if person is not None and gen.rng.random() < keep:
            targets.append(person)
        yield row


def mixed_rows(gen: Generator, n: int, targets: list[Person]) -> Iterator[list[str]]:
    """N rows: ``UPDATE`` of them for ``targets``, a few in-file duplicates, the rest new."""
    rng = gen.rng
    rng.shuffle(targets)
    updates = iter(targets[: round(UPDATE * n)])
    recent: list[str] = []  # CRM ids written earlier in this file
    for _ in range(n):
        r = rng.random()
        if r < UPDATE and (person := next(updates, None)) is not None:
            yield gen.update_row(person)
            continue
        if r < UPDATE + DUPLICATE_IN_FILE and recent:
            row, _person = gen.new_row(crm_id=rng.choice(recent))
            yield row
            continue
        row, _person = gen.new_row()
        if row[0] and len(recent) < 1000:
            recent.append(row[0])
        yield row


def generate(out_dir: Path, n: int, seed: int) -> tuple[Path, Path]:
    """The initial and mixed files for ``n`` rows."""
    gen = Generator(seed + n)
    label = size_label(n)
    targets: list[Person] = []
    initial = out_dir / f"contacts-{label}-initial.csv"
    mixed = out_dir / f"contacts-{label}-mixed.csv"
    write_csv(initial, initial_rows(gen, n, targets))
    write_csv(mixed, mixed_rows(gen, n, targets))
    return initial, mixed


# ---------------------------------------------------------------------------------------------
# Running imports


@dataclass(slots=True)
class RunResult:
    """One import, as the child measured it."""

    file: str
    rows: int
    wall_s: float
    rows_per_s: float
    peak_rss_mib: float
    base_rss_mib: float
    summary: dict[str, int] = field(default_factory=dict)
    profile: str | None = None


def create_hub(db_path: Path) -> str:
    """A fresh SQLite hub with the custom fields defined; its URL."""
    from daemon.hub.contacts import add_custom_field
    from daemon.hub.database import make_engine

    url = f"sqlite:///{db_path}"
    engine = make_engine(url)
    try:
        for name, field_type in CUSTOM_FIELDS.items():
            add_custom_field(engine, name, field_type)
    finally:
        engine.dispose()
    return url


def run_import(
    url: str, csv_path: Path, rows: int, batch_size: int, profile_dir: Path | None
) -> RunResult:
    """Import ``csv_path`` in a fresh child process and return what it measured."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        CHILD_COMMAND,
        "--db",
        url,
        "--csv",
        str(csv_path),
        "--batch-size",
        str(batch_size),
    ]
    profile = None
    if profile_dir is not None:
        profile = str(profile_dir / f"{csv_path.stem}.prof")
        command += ["--profile", profile]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return RunResult(
        file=csv_path.name,
        rows=rows,
        wall_s=measured["wall_s"],
        rows_per_s=rows / measured["wall_s"],
        peak_rss_mib=measured["peak_rss_kib"] / 1024,
        base_rss_mib=measured["base_rss_kib"] / 1024,
        summary={k: measured["summary"].get(k, 0) for k in SUMMARY_KEYS},
        profile=profile,
    )


def proc_status_kib(key: str) -> int:
    """``VmHWM``/``VmRSS`` of this process in KiB (peak RSS from getrusage without /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def child_main(argv: list[str]) -> None:
    """The hidden sub-command: one import, measured; one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog=f"import_csv.py {CHILD_COMMAND}")
    parser.add_argument("--db", required=True)
    parser.add_argument("--csv", required=True, type=Path)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--profile")
    args = parser.parse_args(argv)

    from daemon.foundation import log
    from daemon.hub.contacts import load_schema
    from daemon.hub.csv_import import import_csv
    from daemon.hub.database import make_engine

    log.configure(level="error")  # one warning line per sync error would flood the terminal
    engine = make_engine(args.db, create=False)
    schema = load_schema(engine)
    base_rss = proc_status_kib("VmRSS")

    def run() -> ImportResult:
        return import_csv(engine, args.csv, schema, batch_size=args.batch_size)

    start = time.perf_counter()
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(run)
        profiler.dump_stats(args.profile)
    else:
        result = run()
    wall = time.perf_counter() - start
    peak_rss = proc_status_kib("VmHWM")
    engine.dispose()
    if not result.ok:
        raise SystemExit(f"import refused the file: {result.file_error}")
    measured = {
        "wall_s": wall,
        "peak_rss_kib": peak_rss,
        "base_rss_kib": base_rss,
        "summary": result.report.summary,
    }
    print(json.dumps(measured))


# ---------------------------------------------------------------------------------------------
# Reporting


def size_label(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1:].lower(), 1)
        sizes.append(int(part[:-1] if scale > 1 else part) * scale)
    if not sizes or any(n <= 0 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def print_table(results: list[RunResult]) -> None:
    # (title, width, format of a value)
    columns = [
        ("file", -28, "s"),
        ("rows", 9, ",d"),
        ("wall s", 8, ".1f"),
        ("rows/s", 8, ",.0f"),
        ("peak MiB", 9, ".1f"),
        ("base MiB", 9, ".1f"),
        *((key, 9, ",d") for key in SUMMARY_KEYS),
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            f"{cell:<{-width}}" if width < 0 else f"{cell:>{width}}"
            for cell, (_, width, _) in zip(cells, columns, strict=True)
        )

    head = line([title for title, _, _ in columns])
    print(head)
    print("-" * len(head))
    for r in results:
        values = [r.file, r.rows, r.wall_s, r.rows_per_s, r.peak_rss_mib, r.base_rss_mib]
        values += [r.summary[key] for key in SUMMARY_KEYS]
        print(line([format(v, fmt) for v, (_, _, fmt) in zip(values, columns, strict=True)]))


def rss_ratios(results: list[RunResult], sizes: list[int]) -> dict[str, float]:
    """Peak RSS of the largest size over the smallest, per kind of file."""
    if len(set(sizes)) < 2:
        return {}
    small, large = size_label(min(sizes)), size_label(max(sizes))
    by_name = {r.file: r for r in results}
    ratios = {}
    for kind in ("initial", "mixed"):
        lo = by_name.get(f"contacts-{small}-{kind}.csv")
        hi = by_name.get(f"contacts-{large}-{kind}.csv")
        if lo and hi:
            ratios[f"{kind} {large}/{small}"] = hi.peak_rss_mib / lo.peak_rss_mib
    return ratios


def print_profile(path: str) -> None:
    import pstats

    print(f"\n== cProfile of {Path(path).name} (top {PROFILE_TOP} by cumulative time)")
    pstats.Stats(path, stream=sys.stdout).sort_stats("cumulative").print_stats(PROFILE_TOP)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description="Benchmark contactsync's CSV import (throughput and peak RSS)."
    )
    parser.add_argument("--rows", type=parse_sizes, default=parse_sizes(DEFAULT_ROWS))
    parser.add_argument("--out", type=Path, help="keep the generated files in DIR")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="cProfile each import")
    args = parser.parse_args(argv)

    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="contactsync-bench-") as tmp:
        work = Path(tmp)
        out_dir = args.out or work
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        for n in args.rows:
            label = size_label(n)
            progress(f"{label}: generating files in {out_dir}")
            started = time.perf_counter()
            files = generate(out_dir, n, args.seed)
            progress(f"{label}: generated in {time.perf_counter() - started:.1f}s")
            db_path = work / f"hub-{label}.db"
            url = create_hub(db_path)
            for path in files:
                progress(f"{label}: importing {path.name}")
                result = run_import(url, path, n, args.batch_size, args.profile)
                progress(
                    f"{label}: {result.rows_per_s:,.0f} rows/s, "
                    f"peak RSS {result.peak_rss_mib:.1f} MiB, {result.summary}"
                )
                results.append(result)
            for path in [db_path, *db_path.parent.glob(db_path.name + "-*")]:
                path.unlink(missing_ok=True)
            if args.out is None:
                for path in files:
                    path.unlink()

    ratios = rss_ratios(results, args.rows)
    if args.json:
        document = {
            "python": sys.version.split()[0],
            "seed": args.seed,
            "batch_size": args.batch_size,
            "profiled": args.profile is not None,
            "results": [asdict(r) for r in results],
            "peak_rss_ratio": ratios,
        }
        print(json.dumps(document, indent=2))
        return
    print()
    if args.profile:
        print("(profiled run: cProfile slows the import; do not compare these figures)")
    print_table(results)
    for name, ratio in ratios.items():
        print(f"peak RSS ratio {name}: {ratio:.2f}x  (streaming import: should stay near 1.0)")
    if args.profile:
        for r in results:
            if r.profile:
                print_profile(r.profile)


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_COMMAND:
        child_main(sys.argv[2:])
    else:
        main(sys.argv[1:])

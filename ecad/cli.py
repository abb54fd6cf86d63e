"""`ecad` command line: one subcommand per user task; errors print one clear line, exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecad.schedule import ScheduleError, load_schedule


def _cmd_convert(args: argparse.Namespace) -> int:
    schedule = load_schedule(args.input)
    fmt = "ecad" if args.to == "ecad" else "ecad-schedule"
    out = schedule.save(args.output, format=fmt)
    print(f"wrote {out} ({'ECAD layout' if fmt == 'ecad' else 'ecad-schedule/1'}, {schedule.num_steps} steps, "
          f"{schedule.compute_fraction():.1%} of components computed)")
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:
    from ecad.spaces import list_spaces, load_space

    for name in list_spaces():
        space = load_space(name)
        print(f"{name:20s} {space.family:7s} {space.layout.num_blocks:3d} blocks  {space.steps:3d} steps  "
              f"{space.height}x{space.width}  {space.model}")
    return 0


def _cmd_macs(args: argparse.Namespace) -> int:
    from ecad.cache.macs import dims_for_space, schedule_macs
    from ecad.spaces import load_space

    schedule = load_schedule(args.schedule)
    space = load_space(args.space)
    space.check_schedule(schedule)
    dims = dims_for_space(space)
    report = schedule_macs(schedule, dims, height=space.height, width=space.width, batch=args.batch,
                           text_len=space.text_length, attention_matmuls=not args.ecad_convention)
    full = schedule_macs(space.full_schedule(), dims, height=space.height, width=space.width, batch=args.batch,
                         text_len=space.text_length, attention_matmuls=not args.ecad_convention)
    print(f"{schedule.name or args.schedule}: {report.total / 1e12:.3f} TMACs vs {full.total / 1e12:.3f} uncached "
          f"({full.total / report.total:.2f}x fewer), batch {args.batch}, {space.height}x{space.width}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecad", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a schedule between ecad-schedule/1 and ECAD's JSON layout")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--to", choices=["ecad", "native"], default="native",
                   help="ecad = ECAD's layout (cache_schedule/config/metrics); native = ecad-schedule/1 (default)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("spaces", help="list the search spaces")
    p.set_defaults(func=_cmd_spaces)

    p = sub.add_parser("macs", help="MACs of a schedule in a search space, against no caching")
    p.add_argument("schedule", type=Path)
    p.add_argument("--space", required=True)
    p.add_argument("--batch", type=int, default=2, help="transformer batch (PixArt with CFG: 2 x images)")
    p.add_argument("--ecad-convention", action="store_true", help="count Linear layers only, as ECAD does")
    p.set_defaults(func=_cmd_macs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ScheduleError, ValueError, FileNotFoundError) as exc:
        print(f"ecad {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

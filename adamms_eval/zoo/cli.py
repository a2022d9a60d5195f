"""`adamms zoo build` and `adamms zoo tasks` (registered by adamms_eval.cli)."""
from __future__ import annotations

from pathlib import Path


def cmd_zoo(a) -> None:
    if a.zoo_command == "build":
        from .build import build
        build(a.out, seed=a.seed, size=a.size, force=a.force, threads=a.threads, world_name=a.world)
    else:
        from ..task_folders import default_tasks_dir, write_zoo_tasks
        out = Path(a.out).expanduser() if a.out else default_tasks_dir()
        folder = write_zoo_tasks(out, rows=a.rows, seed=a.seed)
        print(f"wrote the adamms_zoo tasks ({a.rows} questions per skill) to {folder}; "
              f"lmms-eval: --include_path {out}")


def add_parser(sub) -> None:
    z = sub.add_parser("zoo", help="the trained synthetic model zoo (theta0, Qwen2-VL A, LLaVA-OneVision B)")
    zsub = z.add_subparsers(dest="zoo_command", required=True)
    b = zsub.add_parser("build", help="train the zoo (cached under ~/.cache/adamms-eval/zoo/); "
                           "a full seed-0 build says whether it reproduced the weights shipped in zoo_weights/")
    b.add_argument("--out", help="folder (default: the cache folder for this size and seed)")
    b.add_argument("--world", default="disjoint", choices=["disjoint", "generalists"],
                   help="disjoint: A and B tuned on different skill groups (the paper's large-gap case); "
                        "generalists: both on every skill, different mixtures (the paper's main case)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--size", default="full", choices=["full", "ci"], help="ci: a reduced zoo for tests")
    b.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see README)")
    b.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    t = zsub.add_parser("tasks", help="write the adamms_zoo lmms-eval tasks with their data (OUT/adamms_zoo)")
    t.add_argument("--out", help="folder to pass as --include_path (default: ~/.cache/adamms-eval/tasks, "
                                 "under $ADAMMS_CACHE when set)")
    t.add_argument("--rows", type=int, default=100, help="rows per skill (default 100)")
    t.add_argument("--seed", type=int, default=0)
    for p in (z, b, t):
        p.set_defaults(func=cmd_zoo)

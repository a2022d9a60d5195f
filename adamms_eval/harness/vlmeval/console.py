"""The `adamms-vlmeval` console script: SIGINT / SIGTERM handling first, then the launcher (which imports torch and
the session) inside it, so an interrupt during start-up is one line and exit 130 / 143."""
from __future__ import annotations

from ...runtime import run_console


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        from .launcher import main as launch
        return launch(argv)
    return run_console("adamms-vlmeval", body)


if __name__ == "__main__":
    raise SystemExit(main())

"""The options several commands share, declared once, and the helpers that turn them into API arguments.

Commands import from here and from `cli/common.py`, never from each other's modules."""
from __future__ import annotations

from pathlib import Path
from typing import Any

TRUST_HELP = (
    "Load files that can run code (arbitrary pickles, TorchScript, torch.export archives). "
    "Only for files you would run as a program: loading them executes what they contain."
)
HASH_HELP = ("Compute the sha256 of model files of any size (by default files over 4 GiB are not hashed: it "
             "reads every byte, about 10 s for a 14 GB checkpoint).")


def load_cli_config(config_file: str | None, select: list[str] | None, extend_select: list[str] | None,
                    ignore: list[str] | None, fail_on: str | None) -> Any:
    """The file's configuration with the flags on top; unknown selectors fail here, before any model loads."""
    from dldoctor.rules.config import apply_overrides, load_config, split_codes
    from dldoctor.rules.engine import check_selectors, select_rules
    from dldoctor.rules.registry import all_rules

    config = load_config(Path.cwd(), config_file)
    config = apply_overrides(config, select=split_codes(select), extend_select=split_codes(extend_select),
                             ignore=split_codes(ignore), fail_on=fail_on)
    rules = all_rules()
    select_rules(config, None, rules)
    for glob, codes in config.per_file_ignores.items():
        check_selectors(codes, rules, f"in per-file-ignores {glob!r}:")
    return config

"""The pre-commit hook, the GitHub Action and docs/ci.md parse, and name only flags the CLI really has."""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dldoctor.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def help_text(command: str) -> str:
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    return r.output


def flags_in(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", text))


def assert_flags_exist(command: str, text: str) -> None:
    known = flags_in(help_text(command))
    unknown = sorted(f for f in flags_in(text) if f not in known)
    assert not unknown, f"`dldoctor {command}` has no {unknown}"


def test_pre_commit_hook():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in hooks if h["id"] == "dldoctor-check"]
    assert hook["entry"] == "dldoctor check" and hook["language"] == "python"
    assert hook["require_serial"] is True
    files = re.compile(hook["files"])
    for name in ("m.pt", "a/b.pth", "x.onnx", "w.safetensors", "c.ckpt", "e.pt2"):
        assert files.search(name), name
    for name in ("train.py", "m.pt.txt", "README.md", "model.ptx"):
        assert not files.search(name), name
    assert_flags_exist("check", " ".join(hook.get("args", [])))


def test_action():
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert {"paths", "args", "python-version", "sarif-file"} <= set(action["inputs"])
    steps = action["runs"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses)
    install = next(s for s in steps if "pip install" in s.get("run", ""))
    pips = [line for line in install["run"].splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    torch_at = next(i for i, line in enumerate(pips) if " torch " in line)
    assert '--index-url "$TORCH_INDEX_URL"' in pips[torch_at] and torch_at < len(pips) - 1  # torch before dldoctor
    assert install["env"]["TORCH_INDEX_URL"] == "${{ inputs.torch-index-url }}"
    assert action["inputs"]["torch-index-url"]["default"] == "https://download.pytorch.org/whl/cpu"
    check = next(s for s in steps if s.get("id") == "check")
    cmd = next(line for line in check["run"].splitlines() if line.startswith("dldoctor check"))
    assert "--format sarif" in cmd and '-o "$SARIF_FILE"' in cmd
    assert check["env"]["SARIF_FILE"] == "${{ inputs.sarif-file }}"
    assert_flags_exist("check", cmd)
    # the SARIF is uploaded even when the check fails, and the job fails afterwards
    order = [s.get("id") or s.get("uses", "").split("@")[0] or s.get("name") for s in steps]
    upload = order.index("github/codeql-action/upload-sarif")
    assert order.index("check") < upload < len(order) - 1
    assert steps[upload]["if"].startswith("always()")
    assert "exit-code" in steps[-1]["if"] and "exit" in steps[-1]["run"]


def _commands(markdown: str) -> list[tuple[str, str]]:
    """(subcommand, the rest) of every `dldoctor SUB ...` command in the fenced blocks."""
    out = []
    for block in re.findall(r"```(?:yaml|bash|sh)?\n(.*?)```", markdown, re.S):
        joined = re.sub(r"\n\s+(?=--)", " ", block)  # folded YAML (`run: >`) continues on the next lines
        for m in re.finditer(r"dldoctor (check|diff|inspect)\b([^\n]*)", joined):
            out.append((m.group(1), m.group(2)))
    return out


def test_docs_ci_names_real_flags():
    text = (ROOT / "docs" / "ci.md").read_text()
    cmds = _commands(text)
    assert {c for c, _ in cmds} >= {"check", "diff", "inspect"}
    for sub, rest in cmds:
        assert_flags_exist(sub, rest)
    # the flags named in prose, too
    assert_flags_exist("diff", " ".join(f for f in flags_in(text) if "growth" in f or "new-findings" in f))
    assert_flags_exist("check", "--select --ignore --fail-on --input-shape --config --baseline --write-baseline --arch")


def test_docs_ci_yaml_and_toml_parse():
    text = (ROOT / "docs" / "ci.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        # the snippets that start with a list item belong inside a `steps:` or `repos:` list
        doc = yaml.safe_load(block)
        assert doc is not None
    (toml_block,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    from dldoctor.rules.config import parse_config

    cfg = parse_config(tomllib.loads(toml_block)["tool"]["dldoctor"], "pyproject.toml", "tool.dldoctor.")
    assert cfg.budget.max_macs_growth == pytest.approx(0.05) and cfg.budget.baseline_report == "baseline/net.json"


def test_pre_commit_example_matches_the_hook():
    text = (ROOT / "docs" / "ci.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    configs = [b for b in blocks if isinstance(b, dict) and "repos" in b]
    (cfg,) = configs
    (hook,) = cfg["repos"][0]["hooks"]
    assert hook["id"] == "dldoctor-check"
    assert_flags_exist("check", " ".join(shlex.quote(a) for a in hook["args"]))

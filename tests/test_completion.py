"""`hdrlog completion bash|zsh|fish`: generated from the argparse tree, exercised in a real bash."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

PY = sys.executable


def script(shell: str) -> str:
    r = subprocess.run([PY, "-m", "hdrlog", "completion", shell], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def complete(words: list[str], tmp_path) -> list[str]:
    """Run the bash completion function on `hdrlog <words>` (the last word is being completed)."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    f = tmp_path / "hdrlog.bash"
    f.write_text(script("bash"))
    line = " ".join(["hdrlog", *words])
    words_arr = " ".join(f"'{w}'" for w in ["hdrlog", *words])
    cmd = (f"source {f}; COMP_WORDS=({words_arr}); COMP_CWORD={len(words)}; COMP_LINE='{line}'; "
           f"COMP_POINT=${{#COMP_LINE}}; _hdrlog; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return [x for x in r.stdout.splitlines() if x]


def test_bash_commands_options_and_values(tmp_path):
    assert set(complete([""], tmp_path)) >= {"attach", "ps", "doctor", "stats", "completion", "replay", "demo", "setup"}
    assert complete(["do"], tmp_path) == ["doctor"]
    assert set(complete(["attach", "--fo"], tmp_path)) == {"--format"}
    assert set(complete(["attach", "--format", ""], tmp_path)) == {"jsonl", "pretty"}
    assert "--probe-seconds" in complete(["doctor", "--"], tmp_path)
    assert set(complete(["completion", ""], tmp_path)) == {"bash", "zsh", "fish"}
    pids = complete(["attach", "--pid", "1"], tmp_path)
    assert "1" in pids and all(p.isdigit() for p in pids)
    (tmp_path / "cap.jsonl").write_text("")
    assert complete(["stats", "ca"], tmp_path) == ["cap.jsonl"]
    assert "--ringbuf-pages" not in complete(["attach", "--"], tmp_path)  # hidden options stay hidden


def test_zsh_and_fish_scripts():
    z = script("zsh")
    assert z.startswith("#compdef hdrlog") and "bashcompinit" in z and "complete -o filenames -F _hdrlog hdrlog" in z
    f = script("fish")
    assert "complete -c hdrlog -n '__fish_seen_subcommand_from attach' -l pid -r -a '(__fish_complete_pids)'" in f
    assert "-l format -r -a 'jsonl pretty'" in f
    if shutil.which("zsh"):
        r = subprocess.run(["zsh", "-n", "-c", z], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr


def test_bash_script_is_valid_syntax():
    r = subprocess.run(["bash", "-n"], input=script("bash"), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_every_command_help_has_examples():
    for cmd in ("attach", "ps", "doctor", "stats", "completion"):
        r = subprocess.run([PY, "-m", "hdrlog", cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and ("examples:" in r.stdout or "install:" in r.stdout), cmd

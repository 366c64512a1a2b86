"""The progress bar off a terminal (a job's log file): plain lines now and then, quiet
when quick."""

from __future__ import annotations

from rtsal.cli._console import _duration, progress_bar


def test_progress_off_a_terminal_writes_plain_lines(monkeypatch, capsys):
    monkeypatch.setenv("RTSAL_PROGRESS_EVERY", "0")  # a line at every step
    with progress_bar() as p:
        t = p.add_task("labelling photos", total=4)
        for _ in range(4):
            p.advance(t)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("labelling photos: 1/4 (25%), ")
    assert "elapsed, about " in lines[0] and lines[0].endswith(" left")
    assert lines[-1].startswith("labelling photos: 4/4 (100%), ") and "left" not in lines[-1]


def test_progress_off_a_terminal_is_quiet_for_quick_work(monkeypatch, capsys):
    monkeypatch.setenv("RTSAL_PROGRESS_EVERY", "30")
    with progress_bar() as p:
        t = p.add_task("training", total=100)
        for k in range(100):
            p.update(t, completed=k + 1)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RTSAL_PROGRESS_EVERY", "0")
    with progress_bar(enabled=False) as p:  # another process's bar (a torchrun worker)
        t = p.add_task("training", total=2)
        p.advance(t)
    assert capsys.readouterr().err == ""


def test_duration():
    assert [_duration(s) for s in (5, 65, 3600 + 120)] == ["5s", "1m05s", "1h02m"]

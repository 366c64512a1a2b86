"""Flag combinations of `rtsal explain` drawn by hypothesis, on two small real photos: every run
either succeeds with complete outputs or fails with one `error:` line (usage errors: Typer's
message and exit code 2) — never a traceback, never a half-written file."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data as skdata

from tests.helpers import LITE_PLUGIN, run_main

CLASSES = ["Egyptian cat", "tabby", "n07920052", "espresso", "281", "no such class", "1000", "-3"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-photos")
    Image.fromarray(skdata.chelsea()).resize((150, 100)).save(folder / "cat.jpg")
    Image.fromarray(skdata.coffee()).resize((120, 90)).save(folder / "coffee.png")
    return folder


flags = st.fixed_dictionaries(
    {},
    optional={
        "--topk": st.integers(-1, 4) | st.integers(1, 3),
        "--class": st.lists(st.sampled_from(CLASSES), min_size=1, max_size=2),
        "--resize": st.sampled_from(["fit", "square", "fit", "square", "stretch"]),
        "--batch-size": st.integers(-1, 3) | st.integers(1, 3),
        "--method": st.sampled_from(["masker", "masker", "centre-box", "gradient", "no-such"]),
        "--workers": st.integers(-1, 2) | st.integers(0, 2),
        "--precision": st.sampled_from(["float32", "float32", "bfloat16", "float8"]),
        "--save-npy": st.just(None),
        "--json": st.just(None),
    },
)


def _argv(drawn: dict) -> list[str]:
    argv = []
    for flag, value in drawn.items():
        if value is None:
            argv.append(flag)
        elif isinstance(value, list):
            for v in value:
                argv += [flag, v]
        else:
            argv += [flag, str(value)]
    return argv


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(drawn=flags)
def test_explain_flag_combinations(photos, tmp_path_factory, drawn):
    out = tmp_path_factory.mktemp("out")
    argv = ["explain", str(photos), "--out", str(out), *_argv(drawn)]
    r = run_main(*argv, env=LITE_PLUGIN)
    assert "Traceback" not in r.stderr, (argv, r.stderr)
    event(f"exit code {r.code}")
    if r.code != 0:
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        usage = r.code == 2 and ("Usage:" in r.stderr or "Invalid value" in r.stderr)
        assert len(errors) == 1 or usage, (argv, r.code, r.stderr)
    else:
        records = [line for line in r.stdout.splitlines() if line.startswith("{")]
        if "--json" in drawn:
            assert records, (argv, r.stdout)
            for line in records:
                json.loads(line)  # every line is whole
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    assert not leftovers, (argv, leftovers)
    for p in out.rglob("*.png"):
        with Image.open(p) as im:
            im.load()  # every written image is complete

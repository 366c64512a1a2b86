"""A corpus of hostile masking-model checkpoints: each is refused in one line, and none runs code.

Every case is the shipped checkpoint with one thing changed by an attacker: a black box that is
code or a file outside the checkpoint, a weights file name that leaves the folder, a weights
file with a lying header or tensors of the wrong type, a class list of a million names, a
pickle in place of safetensors, links out of the folder. The code the attacker hopes to run
writes a marker file; the marker must never appear. Each case goes through the command line
(``rtsal explain --checkpoint``), ``Explainer.from_pretrained`` and the Hub path (``hf:ORG/NAME``
from the local Hugging Face cache).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from rtsal.engine.checkpoint import shipped_checkpoint
from rtsal.errors import RtsalError
from tests.helpers import LITE_PLUGIN, assert_one_line_error, lite_plugin_only, run_main, run_rtsal

SHIPPED = shipped_checkpoint("efficientnet_lite0")
pytestmark = pytest.mark.skipif(SHIPPED is None, reason="no shipped masking model")

HUB_REPO = "attacker/masker"
HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


class Attack:
    """A place the hostile code writes to when it runs, and the code itself."""

    def __init__(self, root: Path):
        self.root = root
        self.marker = root / "PWNED"
        self.code = root / "code"
        self.code.mkdir()
        payload = f"open({str(self.marker)!r}, 'w').write('ran')\n"
        (self.code / "evil.py").write_text(payload + "def factory():\n    " + payload)
        (self.code / "evilmod.py").write_text(payload + "def factory():\n    " + payload)

    def ran(self) -> bool:
        return self.marker.exists()


class _RunsCode:
    """Unpickling this object writes the marker."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _edit_meta(change: Callable[[dict], None]) -> Callable[[Path, Attack], None]:
    def edit(folder: Path, attack: Attack) -> None:
        path = folder / "rtsal.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))

    return edit


def _black_box(name: str, provider: str = "user") -> Callable[[Path, Attack], None]:
    def edit(folder: Path, attack: Attack) -> None:
        resolved = name.format(code=attack.code)
        _edit_meta(lambda m: m["black_box"].update(name=resolved, provider=provider))(
            folder, attack
        )

    return edit


def _weights_name(name: str) -> Callable[[Path, Attack], None]:
    def edit(folder: Path, attack: Attack) -> None:
        outside = attack.root / "outside.safetensors"
        shutil.copy(folder / "model.safetensors", outside)
        resolved = name.format(outside=outside)
        _edit_meta(lambda m: m.update(weights=resolved))(folder, attack)

    return edit


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _huge_shapes(folder: Path, attack: Attack) -> None:
    header = {
        "decoder.0.weight": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 16]}
    }
    (folder / "model.safetensors").write_bytes(_safetensors(header, b"\0" * 16))


def _huge_header_length(folder: Path, attack: Attack) -> None:
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")


def _wrong_dtype(dtype: str) -> Callable[[Path, Attack], None]:
    def edit(folder: Path, attack: Attack) -> None:
        from safetensors.torch import load_file, save_file

        sd = load_file(str(folder / "model.safetensors"))
        first = sorted(k for k, v in sd.items() if v.is_floating_point())[0]
        sd[first] = sd[first].to(dtype=getattr(__import__("torch"), dtype))
        save_file(sd, str(folder / "model.safetensors"))

    return edit


def _million_classes(folder: Path, attack: Attack) -> None:
    _edit_meta(lambda m: m["black_box"].update(class_names=[f"c{i}" for i in range(10**6)]))(
        folder, attack
    )


def _pickle(folder: Path, attack: Attack) -> None:
    (folder / "model.safetensors").write_bytes(pickle.dumps(_RunsCode(attack.marker)))


def _symlinked_weights(folder: Path, attack: Attack) -> None:
    outside = attack.root / "elsewhere.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    (folder / "model.safetensors").symlink_to(outside)


def _symlinked_description(folder: Path, attack: Attack) -> None:
    outside = attack.root / "elsewhere.json"
    shutil.move(folder / "rtsal.json", outside)
    (folder / "rtsal.json").symlink_to(outside)


def _outside_black_box_weights(folder: Path, attack: Attack) -> None:
    evil = attack.root / "weights.pth"
    evil.write_bytes(pickle.dumps(_RunsCode(attack.marker)))
    _edit_meta(lambda m: m.update(black_box_options={"weights": str(evil)}))(folder, attack)


# case id -> (how the attacker changes the checkpoint, what the one line must say)
CASES: dict[str, tuple[Callable[[Path, Attack], None], str]] = {
    "user-code file": (_black_box("{code}/evil.py:factory"), "--trust-code"),
    "module:callable": (_black_box("evilmod:factory"), "--trust-code"),
    "module:callable, no provider": (_black_box("evilmod:factory", provider=""), "--trust-code"),
    "os:abort": (_black_box("os:abort", provider=""), "--trust-code"),
    "user: prefix": (_black_box("user:evilmod:factory", provider="timm"), "--trust-code"),
    "classifier checkpoint outside": (_black_box("ckpt:{code}", provider="checkpoint"), "trust"),
    "path as a timm name": (_black_box("../../{code}/evil.py", provider="timm"), "path"),
    "weights name traversal": (_weights_name("../outside.safetensors"), "plain file name"),
    "absolute weights name": (_weights_name("{outside}"), "plain file name"),
    "header claims huge shapes": (_huge_shapes, "does not fit"),
    "header length beyond the file": (_huge_header_length, "no valid header"),
    "int8 weights": (_wrong_dtype("int8"), "dtype"),
    "int64 weights": (_wrong_dtype("int64"), "wrong type"),
    "a million class names": (_million_classes, "at most 100,000"),
    "pickle in place of safetensors": (_pickle, "not a safetensors file"),
    "weights linked out of the folder": (_symlinked_weights, "outside the checkpoint"),
    "description linked out of the folder": (_symlinked_description, "outside the checkpoint"),
    "black-box weights file outside": (_outside_black_box_weights, "--weights"),
}


@pytest.fixture()
def attack(tmp_path, monkeypatch) -> Attack:
    a = Attack(tmp_path)
    monkeypatch.syspath_prepend(str(a.code))  # evilmod would import, were it ever imported
    monkeypatch.setenv("PYTHONPATH", f"{a.code}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    yield a
    sys.modules.pop("evilmod", None)


def _hostile_checkpoint(case: str, attack: Attack) -> Path:
    folder = attack.root / "ckpt"
    shutil.copytree(SHIPPED, folder)
    CASES[case][0](folder, attack)
    return folder


def _in_hub_cache(folder: Path, attack: Attack) -> Path:
    """``folder`` as revision HUB_REVISION of HUB_REPO in a local Hugging Face cache."""
    cache = attack.root / "hub"
    repo = cache / ("models--" + HUB_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(HUB_REVISION)
    shutil.copytree(folder, repo / "snapshots" / HUB_REVISION, symlinks=True)
    return cache


def _use_hub_cache(monkeypatch, cache: Path) -> None:
    """This process reads the Hub from ``cache`` only (huggingface_hub reads its settings when
    imported, so they are set on its constants)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from skimage import data

    p = tmp_path_factory.mktemp("photo") / "coffee.jpg"
    Image.fromarray(data.coffee()).save(p)
    return p


@pytest.mark.parametrize("case", list(CASES))
def test_the_command_line_refuses_it(case, attack, photo):
    ckpt = _hostile_checkpoint(case, attack)
    run = run_main("explain", photo, "--checkpoint", ckpt, "--backend", "pytorch", env=LITE_PLUGIN)
    assert_one_line_error(run, CASES[case][1])
    assert not attack.ran()


@pytest.mark.parametrize("case", list(CASES))
def test_from_pretrained_refuses_it(case, attack):
    from rtsal import Explainer

    ckpt = _hostile_checkpoint(case, attack)
    with lite_plugin_only(), pytest.raises(RtsalError, match=CASES[case][1].replace("-", r"\-")):
        Explainer.from_pretrained(ckpt, backend="pytorch")
    assert not attack.ran()


@pytest.mark.parametrize("case", list(CASES))
def test_the_hub_path_refuses_it(case, attack, monkeypatch):
    from rtsal import Explainer

    _use_hub_cache(monkeypatch, _in_hub_cache(_hostile_checkpoint(case, attack), attack))
    with lite_plugin_only(), pytest.raises(RtsalError, match=CASES[case][1].replace("-", r"\-")):
        Explainer.from_pretrained(HUB_REPO, backend="pytorch")
    assert not attack.ran()


@pytest.mark.parametrize("case", ["user-code file", "pickle in place of safetensors"])
def test_a_separate_process_refuses_it_too(case, attack, photo):
    """The same through ``python -m rtsal``, from the Hub cache: exit 1, one line, no marker."""
    cache = _in_hub_cache(_hostile_checkpoint(case, attack), attack)
    env = {**LITE_PLUGIN, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    run = run_rtsal(
        "explain", photo, "--checkpoint", f"hf:{HUB_REPO}", "--backend", "pytorch", env=env
    )
    assert run.code == 1
    assert_one_line_error(run, CASES[case][1])
    assert not attack.ran()


def test_the_unchanged_checkpoint_loads_from_every_path(attack, photo, monkeypatch):
    """The control: the same copies, unchanged, explain the photo (so the refusals above are
    the attacks', not the copying's)."""
    from rtsal import Explainer

    folder = attack.root / "ckpt"
    shutil.copytree(SHIPPED, folder)
    run = run_main(
        "explain", photo, "--checkpoint", folder, "--backend", "pytorch", env=LITE_PLUGIN
    )
    assert run.code == 0, run.stderr
    _use_hub_cache(monkeypatch, _in_hub_cache(folder, attack))
    with lite_plugin_only():
        explainer = Explainer.from_pretrained(HUB_REPO, backend="pytorch")
    assert explainer.black_box.name == "efficientnet_lite0"


def test_trusting_user_code_explicitly_runs_it(attack, photo):
    """``--trust-code`` is the explicit way: then (and only then) the named factory runs."""
    ckpt = _hostile_checkpoint("user-code file", attack)
    run = run_main(
        "explain", photo, "--checkpoint", ckpt, "--backend", "pytorch", "--trust-code",
        env=LITE_PLUGIN,
    )  # fmt: skip
    assert attack.ran()  # the factory ran (it returns None, so the command then fails cleanly)
    assert_one_line_error(run, "evil.py:factory")
